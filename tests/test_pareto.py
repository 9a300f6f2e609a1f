"""--objective pareto: one two-objective study (val accuracy up, size down), its Pareto set reported, exported,
evaluated and shown by the dashboard; the default mode stays single-objective."""
import os
import subprocess
import sys
import warnings

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas.results import report
from nas.engine import study as study_mod
from nas.config import Mode, SearchConfig
from nas.engine.identity import study_identity
from nas.errors import StorageError
from nas.run import open_study
from nas.space.space import SearchSpace
from nas.space.space_file import load_space
from tests.conftest import ROOT
from tests.test_dashboard import dashboard, get_json, search_dashboard_command
from tests.test_objective import _objective

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _frame(rows) -> pd.DataFrame:
    """A trials frame of COMPLETE trials from (number, params, flops, val_acc) rows."""
    return pd.DataFrame([{"number": n, "state": "COMPLETE", "params": p, "flops": f, "val_acc": a}
                         for n, p, f, a in rows])


ROWS = [(0, 1000, 9e5, 0.90), (1, 2000, 3e5, 0.95), (2, 3000, 4e5, 0.93), (3, 4000, 1e6, 0.97), (4, 500, 2e6, 0.80)]


@pytest.mark.parametrize("size, members", [("params", [4, 0, 1, 3]), ("flops", [1, 3])])
def test_the_pareto_set_is_the_non_dominated_trials_by_the_size_column(size, members):
    assert list(report.pareto_frontier(_frame(ROWS), size)["number"]) == members


@pytest.mark.parametrize("size, metric, scale", [("params", "params", 1), ("flops", "mflops", 1e6)])
def test_the_reports_pareto_set_is_optunas(size, metric, scale):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _, params, flops, acc in ROWS:
        study.add_trial(optuna.trial.create_trial(values=[acc, {"params": params, "flops": flops}[size] / scale],
                                                  user_attrs={"params": params, "flops": flops, "val_acc": acc}))
    frontier = report.pareto_frontier(report.trials_frame(study), size)
    assert sorted(frontier["number"]) == sorted(t.number for t in study.best_trials)


def test_the_most_accurate_member_under_a_size():
    sys.path.insert(0, str(ROOT / "bench"))
    from pareto import most_accurate_under

    frontier = report.pareto_frontier(_frame(ROWS))
    assert most_accurate_under(frontier, "params", 2500)["number"] == 1
    assert most_accurate_under(frontier, "params", 500) is None


def test_the_default_mode_is_single_objective_and_named_as_before(tmp_path):
    space = load_space()
    config = SearchConfig(results_dir=str(tmp_path), train_subset=300)
    study = open_study(config, space)
    assert study.study_name == "mnist-25000-sub300" and len(study.directions) == 1
    assert "objective" not in study.user_attrs and "size_metric" not in study.user_attrs
    pareto = SearchConfig(results_dir=str(tmp_path), objective="pareto", size_metric="mflops", train_subset=300)
    assert pareto.study_name(space) == "mnist-25000-sub300-pareto-mflops"
    assert study_identity(pareto, space)["size_metric"] == "mflops"
    with pytest.raises(StorageError, match="--objective pareto"):  # neither mode resumes the other's study
        open_study(SearchConfig(results_dir=str(tmp_path), objective="pareto", study=study.study_name), space)


def _pareto_study(tmp_path, toy, trials, **settings):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=study_mod.make_sampler("random", 0))
    objective = _objective(tmp_path, toy, objective="pareto", **settings)
    study.optimize(objective, n_trials=trials, catch=(Exception,))
    return study


def test_candidates_over_a_ceiling_are_rejected_untrained_in_pareto_mode(tmp_path, toy):
    study = _pareto_study(tmp_path, toy, 12, max_params=450)
    rejected = [t for t in study.trials if t.user_attrs.get("rejected") == study_mod.REJECTED]
    assert rejected, "a 450 budget should reject some of the default space"
    for t in rejected:
        assert t.state == TrialState.PRUNED and not study_mod.is_trained(t) and "train_seconds" not in t.user_attrs
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.values == [t.user_attrs["val_acc"], t.user_attrs["params"]] and t.user_attrs["params"] < 450
            assert t.user_attrs[study_mod.readings_key(100)] == t.values[0] and not t.intermediate_values


def test_pareto_candidates_take_the_depth_of_their_own_size(tmp_path, toy, monkeypatch):
    """Under a pareto ceiling the "auto" rules read each candidate's size; the default mode's read the budget."""
    asked, sample = [], SearchSpace.sample
    monkeypatch.setattr(SearchSpace, "sample", lambda self, *a, **kw: asked.append(kw["auto_by_size"]) or
                        sample(self, *a, **kw))
    _pareto_study(tmp_path, toy, 1, max_params=5000)
    optuna.create_study(direction="maximize").optimize(_objective(tmp_path, toy, max_params=5000), n_trials=1)
    assert asked == [True, False]


def _with_readings(study, rows):
    """Adds finished trials with a reading at 20% from (size, reading) rows."""
    for size, acc in rows:
        study.add_trial(optuna.trial.create_trial(values=[acc, size], user_attrs={
            "params": size, study_mod.readings_key(20): acc}))


def test_pareto_pruning_compares_a_reading_with_similar_sized_trials_only():
    study = optuna.create_study(directions=["maximize", "minimize"])
    _with_readings(study, [(1000, 0.5)] * 5 + [(10_000, 0.9)] * 5)
    prune = lambda percent, acc, size: study_mod.pareto_should_prune(study, 99, percent, acc, size, "params")
    assert prune(20, 0.4, 1500)  # below the median of its 5 similar-sized peers
    assert not prune(20, 0.6, 1500)
    assert not prune(20, 0.4, 3000)  # no peer within a factor of 2: too few to judge
    assert not prune(20, 0.8, 600_000)
    assert not prune(60, 0.1, 1000)  # past PRUNE_UNTIL: never
    assert not study_mod.pareto_should_prune(study, 3, 20, 0.4, 1500, "params")  # only earlier trials count


def test_pareto_pruning_compares_with_completed_trials_only():
    """As the default mode's MedianPruner: the readings of pruned trials, lower, do not pull the median down."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    _with_readings(study, [(1000, 0.9)] * 5)
    for _ in range(6):
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={
            "params": 1000, study_mod.readings_key(20): 0.5}))
    assert study_mod.pareto_should_prune(study, 99, 20, 0.8, 1000, "params")


def test_pareto_pruned_trials_are_recorded_as_in_the_default_mode(tmp_path, toy, monkeypatch):
    monkeypatch.setattr(study_mod, "pareto_should_prune", lambda study, number, percent, *a: number == 1)
    study = _pareto_study(tmp_path, toy, 2, max_params=5000)
    pruned = study.trials[1]
    assert pruned.state == TrialState.PRUNED and study_mod.is_trained(pruned) and pruned.values is None
    assert study_mod.readings_key(20) in pruned.user_attrs and "train_seconds" in pruned.user_attrs
    row = report.trials_frame(study).iloc[1]
    assert row["pruned_at"] == 20 and row["last_reading"] == pruned.user_attrs[study_mod.readings_key(20)]


def run_search(cwd, mnist_root, *args, timeout=300):
    env = {**os.environ, "NAS_DATA_DIR": str(mnist_root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "search.py"), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.integration
def test_a_pareto_search_end_to_end(mnist_root, tmp_path):
    out = run_search(tmp_path, mnist_root, "--objective", "pareto", "--trials", 3, "--jobs", 1, "--threads", 1,
                     "--train-subset", 300, "--max-params", 8000, "--study", "par")
    study = optuna.load_study(study_name="par", storage=f"sqlite:///{tmp_path}/results/nas.db")
    assert len(study.directions) == 2 and study.user_attrs["objective"] == "pareto"
    frontier = pd.read_csv(tmp_path / "results/par/frontier.csv")
    members = sorted(t.number for t in study.best_trials)
    assert sorted(frontier["number"]) == members and frontier["test_acc"].notna().all()
    assert "Pareto set (params, val acc, test acc):" in out and "pick one: the most accurate member" in out

    with dashboard(search_dashboard_command(out), tmp_path) as (port, _):
        (summary,) = [s for s in get_json(port, "/api/studies")["study_summaries"] if s["study_name"] == "par"]
        detail = get_json(port, f"/api/studies/{summary['study_id']}")
        assert detail["directions"] == ["maximize", "minimize"]
        assert sorted(t["number"] for t in detail["best_trials"]) == members  # the front the dashboard plots

    member = members[0]
    weights = tmp_path / "member.safetensors"
    exported = run_search(tmp_path, mnist_root, "export", "--study", "par", "--trial", member, "--out", weights)
    assert f"trial {member} " in exported and weights.is_file()
    evaluated = run_search(tmp_path, mnist_root, "evaluate", "--study", "par", "--trial", member, "--seeds", 1)
    assert f"par trial {member}" in evaluated and "test accuracy:" in evaluated


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_the_pareto_sampler_gives_each_size_band_its_share_of_trials(sampler):
    """A study that rewards the smallest sizes still draws a third of its size shares in each band, and the sampler
    keeps choosing the other parameters; a re-queued trial keeps its share."""
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=study_mod.make_sampler(sampler, 0, Mode("pareto"), (0.2, 0.4, 1.0)))
    study.enqueue_trial({"budget_fill": 0.9})  # as a re-queued trial: its band is not its number's

    def objective(trial):
        fill = trial.suggest_float("budget_fill", 0.15, 1.0, log=True)
        width = trial.suggest_int("width", 4, 64)
        return -fill - width / 1000, fill

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no out-of-range or independent-sampling warning
        study.optimize(objective, n_trials=31)
    fills = [t.params["budget_fill"] for t in study.trials]
    assert fills[0] == 0.9
    edges = [0.15, 0.2, 0.4, 1.0]
    for t in study.trials[1:]:
        band = t.number % 3
        assert edges[band] <= t.params["budget_fill"] <= edges[band + 1] + 1e-12, (t.number, t.params)
    assert len({t.params["width"] for t in study.trials}) > 5


@pytest.mark.parametrize("sizes", [None, (10_000, 25_000), (8_000, 15_000, 20_000)])
def test_each_named_size_has_at_least_its_share_of_the_networks_under_it(sizes):
    """The default space at a 25k ceiling, 30 trials, seed 0: of the networks actually built, at least k/n of the
    trials lie under the k-th of n sizes (5k, 10k, 25k by default), as each band's networks are fitted under its top.
    Before the named sizes, three equal log bands from 0.15 of the ceiling put about one trial in six under 5k."""
    from nas.space.budget import count_params
    from nas.space.space_file import load_space

    config = SearchConfig(objective="pareto", max_params=25_000, sizes=sizes)
    space = load_space()
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=study_mod.make_sampler("tpe", 0, config.mode, config.size_shares))
    params = []
    for _ in range(30):
        trial = study.ask()
        params.append(count_params(space.sample(trial, config.max_params, auto_by_size=True).arch))
        study.tell(trial, (0.9, params[-1]))
    tops = [share * config.max_params for share in config.size_shares]
    under = [sum(p < top for p in params) for top in tops]
    shares = [sum(n % len(tops) <= k for n in range(30)) for k in range(len(tops))]  # trials in bands 0..k
    assert all(u >= s for u, s in zip(under, shares)) and under[-1] == 30, (under, shares)


def test_the_default_mode_draws_its_size_share_unbanded():
    study = optuna.create_study(direction="maximize", sampler=study_mod.make_sampler("tpe", 0))
    study.optimize(lambda t: -t.suggest_float("budget_fill", 0.15, 1.0, log=True), n_trials=30)
    # rewarded for small shares, the sampler drifts under the first band's top (0.28) in most later trials
    assert sum(t.params["budget_fill"] < 0.15 ** (2 / 3) for t in study.trials[10:]) > 12
