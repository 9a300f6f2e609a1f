"""Workers: pull trials to the study's total, stop when the space cannot fit, settle the heap, die with the parent."""
import dataclasses
import gc
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import logs
from nas.engine import optuna_internals as internals
from nas.engine import objective as objective_mod, storage as storage_mod, study as study_mod, workers
from nas.config import SearchConfig
from nas.data import split_fingerprint
from nas.errors import SearchFailed, StorageError
from nas.engine.interrupts import CTRL_C
from nas.run import open_study
from nas.space.space_file import load_space
from nas.engine.study import FAILED_BY_ERROR, REJECTED
from tests.conftest import ROOT, synthetic_splits

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


def test_the_stopper_counts_the_trials_other_workers_are_running():
    study = optuna.create_study(direction="maximize")
    study.ask()  # another worker's trial, still training
    study.optimize(_Rejecting(), n_trials=20, callbacks=[workers.Stopper(3, _Rejecting())])
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.COMPLETE, TrialState.COMPLETE]


@pytest.mark.parametrize("target, trains", [(2, False), (3, True)])
def test_a_trial_started_when_the_trials_before_it_make_up_the_total_is_surplus_and_stops_its_worker(target, trains):
    """Trial 0 trained and trial 1 running elsewhere: with a total of 2 a trial 2, which another worker may have
    started as trial 1 did, is stored untrained and its worker stops; with 3 it trains."""
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # another worker's trial, still training
    objective = _Rejecting()
    study.optimize(workers.within_total(objective, target), n_trials=5, callbacks=[workers.Stopper(target, objective)])
    assert len(study.trials) == 3  # it stopped after trial 2 either way
    last = study.trials[2]
    assert last.state == (TrialState.COMPLETE if trains else TrialState.PRUNED)
    assert last.user_attrs.get("rejected") == (None if trains else study_mod.REJECTED_SURPLUS)
    assert study_mod.is_trained(last) == trains


def test_the_trials_claimed_before_a_trial_are_those_trained_running_or_waiting():
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 0.5)  # 0: trained
    study.ask()  # 1: running
    study.tell(study.ask(), state=TrialState.FAIL)  # 2: interrupted, not trained (it carries no fail_reason)
    study.enqueue_trial({})  # 3: waiting to run
    assert [study_mod.claimed_before(study, n) for n in range(5)] == [0, 1, 2, 2, 3]


def test_the_stopper_gives_up_when_the_space_cannot_fit_the_budget(monkeypatch):
    monkeypatch.setattr(workers, "MAX_CONSECUTIVE_REJECTIONS", 5)
    study = optuna.create_study(direction="maximize")
    objective = _Rejecting(rejected={"all"})
    stopper = workers.Stopper(50, objective)
    study.optimize(objective, n_trials=20, callbacks=[stopper])
    assert len(study.trials) == 5 and stopper.space_cannot_fit


class _Failing(_Rejecting):
    """Stands in for the objective: trial N fails with errors[N] (an error, not the candidate's), else trains."""

    def __init__(self, errors, rejected=()):
        super().__init__(rejected)
        self.errors = errors

    def __call__(self, trial):
        error = self.errors.get(trial.number)
        if error is None:
            return super().__call__(trial)
        trial.set_user_attr("fail_kind", FAILED_BY_ERROR)
        trial.set_user_attr("fail_reason", error)
        raise RuntimeError(error)


def _errors_in_a_row(errors, rejected=(), n_trials=30):
    study = optuna.create_study(direction="maximize")
    stopper = workers.Stopper(20, _Failing(errors, rejected))
    study.optimize(stopper.objective, n_trials=n_trials, callbacks=[stopper], catch=(Exception,))
    return study, stopper


def test_the_stopper_stops_after_five_errors_in_a_row_and_names_them():
    disk = {n: f"OSError: [Errno 28] No space left on device: 'trial-{n}.tmp'" for n in range(2, 30) if n != 4}
    study, stopper = _errors_in_a_row({0: "RuntimeError: a bug", **disk}, rejected={4})
    assert len(study.trials) == 8  # trial 4, rejected, neither ends nor extends the run of errors
    assert stopper.repeated_errors() == ("stopped after 5 trials in a row failed with the same error (trials 2, 3, 5, 6, "
                                         "7): OSError: [Errno 28] No space left on device: 'trial-7.tmp'")


def test_a_trained_trial_or_another_error_ends_a_run_of_errors():
    errors = {n: "OSError: disk" for n in (0, 1, 2, 3, 5, 6, 7, 8)} | {9: "ValueError: bug", 10: "OSError: disk"}
    study, stopper = _errors_in_a_row(errors, n_trials=12)  # trial 4 trains; 9 is another error
    assert len(study.trials) == 12 and stopper.repeated_errors() is None


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


def test_a_worker_waits_out_a_killed_workers_trial_and_trains_to_the_total(tmp_path, toy, monkeypatch):
    """A resumed search whose study holds a killed worker's trial, still RUNNING within its grace period: the worker
    does not stop one short, counting it as running, but waits until the trial is failed and re-queued, and trains
    it."""
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "1")
    monkeypatch.setenv(storage_mod.GRACE_ENV, "2")
    config = SearchConfig(trials=2, max_params=25_000, quiet=True, device="cpu", jobs=1, results_dir=str(tmp_path))
    study = open_study(config, load_space())
    with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(), as the killed worker used
        warnings.simplefilter("ignore", UserWarning)
        killed = study.ask()
    internals.study_storage(study).record_heartbeat(internals.trial_id(killed))  # it beat once, then its worker was killed
    monkeypatch.setattr(workers, "load_data", lambda config, device: toy)
    assert workers.run_worker(config) is False
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and study_mod.trained_count(study) == 2, states


def test_a_study_resumes_only_on_the_data_it_was_made_with(tmp_path, monkeypatch):
    """Images added to the data since (here 16 more training images) redraw the hold-out: the worker refuses to
    train on, in one line, before any trial; the same images resume."""
    config = SearchConfig(trials=1, max_params=25_000, quiet=True, device="cpu", jobs=1, results_dir=str(tmp_path))
    study = open_study(config, load_space())
    data = {"splits": synthetic_splits(64, 32, 32)}
    monkeypatch.setattr(workers, "load_data", lambda config, device: data["splits"])
    workers.run_worker(config)
    data["splits"] = synthetic_splits(80, 32, 32)
    with pytest.raises(StorageError, match="was made from other data"):
        workers.run_worker(dataclasses.replace(config, trials=2))
    assert len(study.trials) == 1
    data["splits"] = synthetic_splits(64, 32, 32)
    workers.run_worker(dataclasses.replace(config, trials=2))
    assert study_mod.trained_count(study) == 2


def test_the_data_fingerprint_follows_the_images_and_labels_not_their_pixels():
    splits = synthetic_splits(64, 32, 32)
    same = split_fingerprint(splits)
    splits.x_train[0] += 1  # decoded or resized a little differently
    assert split_fingerprint(splits) == same
    splits.y_train[0] = (splits.y_train[0] + 1) % 10  # relabelled
    assert split_fingerprint(splits) != same
    assert split_fingerprint(synthetic_splits(65, 32, 32)) != same


def _study_waiting_on_another_worker():
    """One trained trial, and another worker's trial running: a total of 2 may be reached without this worker."""
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 0.5)
    return study, study.ask()


@pytest.mark.parametrize("ends, trains_more", [(TrialState.COMPLETE, False), (TrialState.FAIL, True)])
def test_a_worker_waits_for_another_workers_trial_and_trains_on_only_if_it_ends_untrained(ends, trains_more, capsys):
    logs.configure(quiet=False)
    study, other = _study_waiting_on_another_worker()
    threading.Timer(1.0, lambda: study.tell(other, 0.6 if ends == TrialState.COMPLETE else None, state=ends)).start()
    assert workers._await_running(study, 2, deadline=None) is trains_more
    assert "1 of 2 trained; waiting for trial(s) 1, running now" in capsys.readouterr().out


def test_a_signal_stops_a_worker_that_waits_and_a_deadline_ends_the_wait(monkeypatch):
    study, _ = _study_waiting_on_another_worker()
    assert workers._await_running(study, 2, deadline=time.monotonic() + 0.6) is False
    monkeypatch.setattr(CTRL_C, "presses", 1)  # a first Ctrl-C, noted
    with pytest.raises(KeyboardInterrupt):
        workers._await_running(study, 2, deadline=None)


def _entry_with_a_fake_run(*args):
    """In a worker process: the real entry around a fake run, in which worker 1 fails."""
    workers.run_worker = _fake_run
    workers._worker_entry(*args)


def _fake_run(config, worker, threads):
    if worker == 1:
        raise ValueError("a bug\nits second line")
    study = optuna.load_study(study_name=config.study, storage=config.storage_url)
    study.tell(study.ask(), 0.5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # trains on, until told to stop
        CTRL_C.check()
        time.sleep(0.1)
    return False


def test_a_failed_worker_stops_the_others_and_is_named_and_their_finished_trials_are_kept(tmp_path, monkeypatch):
    config = SearchConfig(trials=5, quiet=True, device="cpu", jobs=2, threads=1, results_dir=str(tmp_path), study="s")
    study = open_study(config, load_space())
    monkeypatch.setattr(workers, "_worker_entry", _entry_with_a_fake_run)
    started = time.monotonic()
    with pytest.raises(SearchFailed) as e:
        workers.run_all(config, synthetic_splits(64, 32, 32))
    assert str(e.value) == "worker 1 failed: ValueError: a bug"
    assert time.monotonic() - started < 40, "worker 0 was not stopped"
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


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
