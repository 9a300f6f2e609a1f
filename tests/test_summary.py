"""The end of a run: reports and the best model from the storage, and the printed summary."""
import optuna
from optuna.trial import TrialState

from nas import export, summary
from nas.config import SearchConfig
from nas.objective import Objective
from nas.space import load_space
from nas.study import make_sampler
from nas.workers import Stopper

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_when_every_trial_fails_the_summary_says_why(tmp_path, capsys):
    config = SearchConfig(trials=2, results_dir=str(tmp_path), study="allfail")
    study = optuna.create_study(study_name="allfail", storage=f"sqlite:///{tmp_path}/nas.db", direction="maximize")
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr("params", 100)
        trial.set_user_attr("fail_reason", "TrainingDiverged: loss became nan at step 3")
        study.tell(trial, state=TrialState.FAIL)
    result = summary.finish(config, study, 1.0)
    out = capsys.readouterr().out
    assert "no trial completed" in out and "2x TrainingDiverged: loss became nan" in out
    assert result["best"] is None and "best" not in result["paths"]


def test_the_summary_shows_the_frontier_and_the_best_and_exports_it(tmp_path, toy, capsys):
    config = SearchConfig(trials=2, results_dir=str(tmp_path), study="s", device="cpu")
    study = optuna.create_study(study_name="s", storage=config.storage_url, direction="maximize",
                                sampler=make_sampler("random", 0))
    objective = Objective(config, load_space(), toy, "cpu", export.artifact_store(config.artifacts("s")),
                          tmp_path / "scratch")
    study.optimize(objective, callbacks=[Stopper(2, objective)])
    capsys.readouterr()
    result = summary.finish(config, study, 1.0)
    out = capsys.readouterr().out
    best = study.best_trial
    assert result["best"] == best.number
    assert f"best: trial {best.number}, {best.user_attrs['params']:,} params, val {best.value:.2%}" in out
    assert "Pareto frontier" in out and f"trial {best.number:>4}" in out
    assert f"dashboard: optuna-dashboard sqlite:///{tmp_path}/nas.db --artifact-dir {tmp_path}/s/artifacts" in out
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors", "best.json"):
        assert (tmp_path / "s" / name).is_file(), name
    assert export.read_candidate(tmp_path / "s" / "best.safetensors").to_json() == best.user_attrs["spec"]
    # with the data its trials trained on, so the exported model normalises its input itself
    assert export.read_spec(tmp_path / "s" / "best.safetensors")[1] == toy.info
    assert export.load(tmp_path / "s" / "best.safetensors").info == toy.info


def test_the_dashboard_command_names_the_psycopg_driver_and_the_artifacts():
    config = SearchConfig(storage="postgresql://u:p@h/db", artifact_dir="/shared/art")
    assert summary.dashboard_command(config, "s") == "optuna-dashboard postgresql+psycopg://u:p@h/db --artifact-dir /shared/art"



def test_the_summary_counts_each_kind_of_rejection(tmp_path, capsys):
    from nas import study as study_mod

    config = SearchConfig(trials=1, results_dir=str(tmp_path), study="r")
    study = optuna.create_study(study_name="r", storage=config.storage_url, direction="maximize")
    kinds = [study_mod.REJECTED, study_mod.REJECTED_FLOPS, study_mod.REJECTED_MEMORY, study_mod.REJECTED_MEMORY,
             study_mod.REJECTED_LATENCY, study_mod.REJECTED_LATENCY, study_mod.REJECTED_LATENCY]
    for why in kinds:
        trial = study.ask()
        trial.set_user_attr("params", 100)
        trial.set_user_attr("rejected", why)
        study.tell(trial, state=TrialState.PRUNED)
    summary.finish(config, study, 1.0)
    out = capsys.readouterr().out
    assert ("rejected, not counted: 1 over the param budget (never trained), 1 over the compute ceiling (never "
            "trained), 2 over the peak-memory ceiling (never trained), 3 over the latency ceiling (never trained), "
            "0 too slow") in out
