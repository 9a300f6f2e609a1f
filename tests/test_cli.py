"""End to end: search.py in a subprocess on real MNIST subsets."""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from nas import data as data_mod, export, references
from nas.train import evaluate
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def search_py(*args, env_extra=None, timeout=600):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "search.py"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def small_search(tmp_path_factory, mnist_root):
    """Three trained trials under a tight budget, so the filter has candidates to reject."""
    results = tmp_path_factory.mktemp("results")
    proc = search_py("--trials", 3, "--train-subset", 1500, "--max-params", 4000, "--results-dir", results,
                     "--study", "t", "--seed", 3, "--threads", 1, "--jobs", 1, "--data-dir", mnist_root)
    assert proc.returncode == 0, proc.stderr
    return results, proc


def test_search_writes_every_result_file(small_search):
    results, proc = small_search
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors", "best.json"):
        assert (results / "t" / name).is_file(), name
    assert (results / "nas.db").is_file()
    assert "optuna-dashboard sqlite:///" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_over_budget_candidates_were_never_trained(small_search):
    results, _ = small_search
    trials = pd.read_csv(results / "t" / "trials.csv")
    trained = trials[trials["state"] == "COMPLETE"]
    rejected = trials[trials["rejected"] == "over_budget"]
    assert (trained["params"] < 4000).all()
    assert (rejected["params"] >= 4000).all()
    assert rejected["train_seconds"].isna().all() and rejected["val_acc"].isna().all()
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{results}/nas.db")
    counted = [t for t in study.trials if t.user_attrs.get("rejected") != "over_budget" and t.state.is_finished()]
    assert len(counted) == 3


def test_exported_weights_reload_to_the_recorded_test_accuracy(small_search, mnist):
    results, _ = small_search
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{results}/nas.db")
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    model = export.load(results / "t" / "best.safetensors")
    x = mnist.x_test.contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    assert evaluate(model, x, mnist.y_test) == pytest.approx(best.user_attrs["test_acc"], abs=1e-4)


def test_report_regenerates_from_the_storage_alone(small_search):
    results, _ = small_search
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors"):
        (results / "t" / name).unlink()
    proc = search_py("report", "--study", "t", "--results-dir", results)
    assert proc.returncode == 0, proc.stderr
    for name in ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors"):
        assert (results / "t" / name).is_file()


def test_export_any_trial(small_search, tmp_path):
    results, _ = small_search
    proc = search_py("export", "--study", "t", "--results-dir", results, "--out", tmp_path / "x.safetensors")
    assert proc.returncode == 0, proc.stderr
    assert export.load(tmp_path / "x.safetensors") is not None and (tmp_path / "x.json").is_file()


def test_rerun_resumes_the_study(small_search, mnist_root):
    results, _ = small_search
    proc = search_py("--trials", 4, "--train-subset", 1500, "--max-params", 4000, "--results-dir", results,
                     "--study", "t", "--seed", 3, "--threads", 1, "--jobs", 1, "--data-dir", mnist_root)
    assert proc.returncode == 0, proc.stderr
    assert "3 trained trial(s) so far" in proc.stdout
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{results}/nas.db")
    assert sum(t.state.is_finished() and t.user_attrs.get("rejected") != "over_budget" for t in study.trials) == 4


def test_describe_prints_the_layer_table_and_exact_total():
    proc = search_py("describe", ROOT / "search_spaces/reference/r2_residual_gap.json")
    assert proc.returncode == 0, proc.stderr
    assert "total: 8,530 trainable parameters" in proc.stdout
    assert "(24, 7, 7)" in proc.stdout


def test_baselines_train_the_references_through_the_same_trainer(tmp_path, mnist_root):
    proc = search_py("baselines", "--only", "R1,R2", "--train-subset", 1000, "--results-dir", tmp_path,
                     "--threads", 1, "--data-dir", mnist_root)
    assert proc.returncode == 0, proc.stderr
    assert "20,586" in proc.stdout and "8,530" in proc.stdout
    study = optuna.load_study(study_name="baselines-mnist", storage=f"sqlite:///{tmp_path}/nas.db")
    assert sorted(t.user_attrs["reference"] for t in study.trials) == ["R1", "R2"]
    # drawn only on frontiers scored alike: same hold-out, same training subset
    storage = study._storage
    assert sorted(references.baseline_frame(storage, "mnist", data_mod.VAL_SIZE, 1000)["reference"]) == ["R1", "R2"]
    assert references.baseline_frame(storage, "mnist", data_mod.VAL_SIZE, None).empty
    assert references.baseline_frame(storage, "mnist", data_mod.LEGACY_VAL_SIZE, 1000).empty
