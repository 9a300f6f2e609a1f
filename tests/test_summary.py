"""The end of a run: reports and the best model from the storage, and the printed summary."""
import dataclasses

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas import data as data_mod
from nas.deploy import export
from nas.results import scoring, summary
from nas.space.budget import count_params
from nas.space.build import build
from nas.config import SearchConfig
from nas.engine.objective import Objective, record_candidate, record_result
from nas.space.space_file import load_space
from nas.space.spec import ArchSpec, Candidate, TrainRecipe
from nas.space.blocks import Conv, GlobalAvgPool, Linear, Pool
from nas.engine.study import make_sampler
from nas.engine.train import evaluate, train
from nas.engine.workers import Stopper
from tests.conftest import QUADRANT_CLASSES as CLASSES, QUADRANT_SHAPE as SHAPE, quadrant_images

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
    # the toy tensors cannot be read again: no test figures, and one line says why
    assert f"  (no test accuracy: {summary.NO_TEST})" in out and f"val {best.value:.2%}, test - ->" in out
    assert f"dashboard: optuna-dashboard sqlite:///{tmp_path}/nas.db --artifact-dir {tmp_path}/s/artifacts" in out
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors", "best.json"):
        assert (tmp_path / "s" / name).is_file(), name
    assert export.read_spec(tmp_path / "s" / "best.safetensors")[0].to_json() == best.user_attrs["spec"]
    # with the data its trials trained on, so the exported model normalises its input itself
    assert export.read_spec(tmp_path / "s" / "best.safetensors")[1] == toy.info
    assert export.load(tmp_path / "s" / "best.safetensors").info == toy.info


def test_the_dashboard_command_names_the_psycopg_driver_and_the_artifacts():
    config = SearchConfig(storage="postgresql://u:p@h/db", artifact_dir="/shared/art")
    assert summary.dashboard_command(config, "s") == "optuna-dashboard postgresql+psycopg://u:p@h/db --artifact-dir /shared/art"



def test_the_summary_counts_each_kind_of_rejection(tmp_path, capsys):
    from nas.engine import study as study_mod

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
            "trained), 2 over the peak-memory ceiling (never trained), 3 over the latency ceiling (never trained); "
            "0 failed") in out  # kinds with none are left out: here, too slow


def test_the_summary_says_none_were_rejected_when_none_were(tmp_path, capsys):
    config = SearchConfig(trials=1, results_dir=str(tmp_path), study="r")
    study = optuna.create_study(study_name="r", storage=config.storage_url, direction="maximize")
    summary.finish(config, study, 1.0)
    assert "0 trained trial(s); rejected, not counted: none; 0 failed" in capsys.readouterr().out


def test_the_frontier_and_the_best_are_scored_on_the_test_set_from_their_stored_weights(tmp_path, capsys):
    """Trials store validation only; the report scores the frontier's weights on the study's test images, read
    again from the npz file the study was made from."""
    path = tmp_path / "quadrants.npz"
    (x_train, y_train), (x_test, y_test) = quadrant_images(600, 0), quadrant_images(400, 1)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    config = SearchConfig(results_dir=str(tmp_path), study="q", dataset="npz", data_dir=str(path))
    splits = data_mod.load("npz", path)
    study = optuna.create_study(study_name="q", storage=config.storage_url, direction="maximize")
    store = export.artifact_store(config.artifacts("q"))
    for width, epochs in [(4, 1), (6, 1), (16, 2)]:  # trained briefly, so their test accuracies differ
        candidate = Candidate(ArchSpec((Conv(width, bn=True, act="relu"), Pool(), GlobalAvgPool(), Linear(CLASSES)),
                                       SHAPE, CLASSES), TrainRecipe(lr=0.1, batch_size=32))
        trial, model = study.ask(), build(candidate.arch, seed=width)
        result = train(model, candidate.recipe, splits, epochs=epochs, seed=0, test=False)
        record_candidate(trial, candidate, count_params(candidate.arch))
        record_result(trial, result, model, candidate, store, tmp_path / "tmp", splits.info)
        study.tell(trial, result.val_acc)
    summary.finish(config, study, 1.0)
    out = capsys.readouterr().out
    frontier = pd.read_csv(tmp_path / "q" / "frontier.csv")
    assert "test_acc" not in pd.read_csv(tmp_path / "q" / "trials.csv").columns

    def test_acc(number):  # the exported weights, evaluated here on [0, 1] images as a user would
        weights = export.export_trial(study.trials[number], store, tmp_path / f"trial-{number}.safetensors")
        return evaluate(export.load(weights), splits.x_test.float() / 255, splits.y_test)

    expected = [test_acc(n) for n in frontier["number"]]
    assert len(set(expected)) == len(expected)  # distinct networks: each row has its own
    assert frontier["test_acc"].tolist() == pytest.approx(expected, abs=1.5 / len(y_test))  # a rounding flip at most
    best = study.best_trial
    assert f"val {best.value:.2%}, test {frontier.set_index('number')['test_acc'][best.number]:.2%} ->" in out
    for _, row in frontier.iterrows():
        assert f"trial {row['number']:>4}  {row['params']:>7,}  {row['val_acc']:.2%}  {row['test_acc']:.2%}" in out
    assert f"test {frontier['test_acc'].iloc[0]:.2%}" in (tmp_path / "q" / "frontier.html").read_text()
    assert (tmp_path / "q" / "best.onnx").is_file() and "no test accuracy" not in out


def test_the_reports_score_on_the_splits_the_search_already_read_and_read_other_data_again(tmp_path, monkeypatch):
    config, study = _one_trained_trial(tmp_path)
    held = data_mod.load("npz", config.data_dir)
    reads = []
    real = scoring.study_data
    monkeypatch.setattr(scoring, "study_data", lambda info, config: reads.append(info) or real(info, config))
    summary.finish(config, study, 1.0, held)
    assert reads == []  # the search's own splits: the data is not read again
    other = data_mod.Splits(held.x_train, held.y_train, held.x_val, held.y_val, held.x_test, held.y_test,
                            info=dataclasses.replace(held.info, source="npz:/elsewhere.npz"))
    summary.finish(config, study, 1.0, other)
    assert [info.source for info in reads] == [held.info.source]  # splits of other data: read the study's own


def _one_trained_trial(tmp_path, **settings) -> tuple[SearchConfig, optuna.Study]:
    """A study "m" of one network trained on the quadrant toy set, and a config with `settings`."""
    path = tmp_path / "quadrants.npz"
    (x_train, y_train), (x_test, y_test) = quadrant_images(1200, 0), quadrant_images(1200, 1)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    config = SearchConfig(results_dir=str(tmp_path), study="m", dataset="npz", data_dir=str(path), **settings)
    splits = data_mod.load("npz", path)
    study = optuna.create_study(study_name="m", storage=config.storage_url, direction="maximize")
    # learns the toy task (above 90%), so int8 and fp32 agree as on a real network
    candidate = Candidate(ArchSpec((Conv(16, bn=True, bias=False, act="relu"), Pool(),
                                    Conv(32, bn=True, bias=False, act="relu"), Pool(), GlobalAvgPool(),
                                    Linear(CLASSES)), SHAPE, CLASSES), TrainRecipe(lr=0.1, batch_size=32))
    trial, model = study.ask(), build(candidate.arch, seed=0)
    result = train(model, candidate.recipe, splits, epochs=2, seed=0, test=False)
    record_candidate(trial, candidate, count_params(candidate.arch))
    record_result(trial, result, model, candidate, export.artifact_store(config.artifacts("m")), tmp_path / "tmp",
                  splits.info)
    study.tell(trial, result.val_acc)
    return config, study


@pytest.mark.parametrize("settings", [dict(max_arena_kb=64.0), dict(int8_memory=True)])
def test_a_search_for_a_microcontroller_writes_best_tflite_and_its_c_array_with_one_line(tmp_path, capsys,
                                                                                        settings):
    from nas.deploy import tflite_runtime

    config, study = _one_trained_trial(tmp_path, **settings)
    paths = summary.finish(config, study, 1.0)["paths"]
    out = capsys.readouterr().out
    folder = tmp_path / "m"
    assert paths["tflite"] == folder / "best.tflite"
    assert {"best.tflite", "best_data.cc", "best_data.h"} <= {p.name for p in folder.iterdir()}
    flatbuffer = (folder / "best.tflite").read_bytes()
    assert tflite_runtime.is_int8(flatbuffer)
    line = next(line for line in out.splitlines() if line.startswith("best.tflite"))
    arena = tflite_runtime.measured_arena(flatbuffer)
    assert f"flash {len(flatbuffer) / 1024:.1f} KB, TFLM arena {arena.total / 1024:.1f} KB" in line
    assert "best.tflite, best_data.cc, best_data.h)" in out  # the results line lists them


def test_without_the_toolchain_a_microcontroller_search_still_writes_everything_else(tmp_path, capsys, monkeypatch):
    from nas.deploy import tflite_export

    def missing():
        raise tflite_export.MissingToolchain(f"TFLite export needs the optional toolchain: {tflite_export.INSTALL}")

    monkeypatch.setattr(tflite_export, "require", missing)
    config, study = _one_trained_trial(tmp_path, max_arena_kb=64.0)
    paths = summary.finish(config, study, 1.0)["paths"]
    out = capsys.readouterr().out
    assert "tflite" not in paths and (tmp_path / "m" / "best.onnx").is_file()
    assert "best.tflite not written: TFLite export needs the optional toolchain: pip install -e '.[tflite]'" in out
    assert not (tmp_path / "m" / "best.tflite").exists()


def test_a_search_not_for_a_microcontroller_writes_no_tflite(tmp_path, capsys):
    config, study = _one_trained_trial(tmp_path)
    assert "tflite" not in summary.finish(config, study, 1.0)["paths"]
    assert not (tmp_path / "m" / "best.tflite").exists()
