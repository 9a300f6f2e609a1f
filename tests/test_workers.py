"""Workers: pull trials to the study's total, stop when the space cannot fit, settle the heap, die with the parent."""
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nas import objective as objective_mod, workers
from nas.config import SearchConfig
from nas.search import open_study
from nas.space import load_space
from nas.study import REJECTED
from tests.conftest import ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Rejecting:
    """Stands in for the objective: trials listed in `rejected` are rejected, the others train."""

    def __init__(self, rejected=()):
        self.rejected, self.rejected_in_a_row = set(rejected), 0

    def __call__(self, trial):
        if trial.number in self.rejected or self.rejected == {"all"}:
            self.rejected_in_a_row += 1
            trial.set_user_attr("rejected", REJECTED)
            raise optuna.TrialPruned()
        self.rejected_in_a_row = 0
        return 0.5


def test_the_stopper_stops_at_the_total_of_trained_trials_only():
    study = optuna.create_study(direction="maximize")
    objective = _Rejecting(rejected={1, 2})
    stopper = workers.Stopper(2, objective)
    study.optimize(objective, n_trials=20, callbacks=[stopper])
    assert len(study.trials) == 4 and not stopper.space_cannot_fit


def test_the_stopper_gives_up_when_the_space_cannot_fit_the_budget(monkeypatch):
    monkeypatch.setattr(workers, "MAX_CONSECUTIVE_REJECTIONS", 5)
    study = optuna.create_study(direction="maximize")
    objective = _Rejecting(rejected={"all"})
    stopper = workers.Stopper(50, objective)
    study.optimize(objective, n_trials=20, callbacks=[stopper])
    assert len(study.trials) == 5 and stopper.space_cannot_fit


def test_a_worker_trains_to_the_total_and_keeps_long_lived_objects_out_of_collections_between_trials(
        tmp_path, toy, monkeypatch):
    config = SearchConfig(trials=3, max_params=25_000, quiet=True, device="cpu", jobs=1, results_dir=str(tmp_path))
    study = open_study(config, load_space())
    monkeypatch.setattr(workers, "load_data", lambda config, device: toy)
    frozen = []
    real_train = objective_mod.train

    def spy(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(objective_mod, "train", spy)
    assert workers.run_worker(config) is False
    assert sum(t.state.is_finished() and "rejected" not in t.user_attrs for t in study.trials) == 3
    assert len(frozen) >= 3 and frozen[-1] > 0  # settled after each trial
    assert gc.get_freeze_count() == 0  # released once the worker is done: nothing it made is kept for good


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.integration
def test_workers_exit_when_their_parent_is_killed(tmp_path, mnist_root):
    """--jobs workers watch their parent: a killed search leaves no orphan training on."""
    args = [sys.executable, "search.py", "--trials", "50", "--jobs", "2", "--train-subset", "2000", "--threads", "1",
            "--results-dir", tmp_path / "r", "--data-dir", mnist_root]
    proc = subprocess.Popen([str(a) for a in args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        for line in proc.stdout:  # wait until the workers train
            if b"] trial" in line:
                break
        spawned = [p for p in _children(proc.pid) if Path(f"/proc/{p}/cmdline").read_bytes().find(b"spawn_main") >= 0]
        assert len(spawned) == 2
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_running(p) for p in spawned):
            time.sleep(0.5)
        alive = [p for p in spawned if _running(p)]
        assert not alive, f"orphaned workers still running: {alive}"
    finally:
        proc.kill()
