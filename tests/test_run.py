"""nas.run: one search in-process, on a toy task: the study reaches its total, then reports, export and summary."""
import os
import signal

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine import objective as objective_mod, workers
from nas import run as search
from nas.config import SearchConfig
from nas.errors import SearchError, SearchFailed
from nas.engine.study import trained_count
from nas.engine.train import TrainingDiverged

RESULT_FILES = ("trials.csv", "frontier.csv", "frontier.html", "best.safetensors", "best.json")


@pytest.fixture
def toy_search(tmp_path, toy, monkeypatch):
    monkeypatch.setattr(search, "read_data", lambda config: toy)
    return SearchConfig(trials=2, results_dir=str(tmp_path), study="s", device="cpu", jobs=1, threads=1)


def test_a_search_trains_the_total_then_writes_every_result(toy_search, tmp_path, capsys):
    result = search.run(toy_search)
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="s", storage=toy_search.storage_url)
    assert trained_count(study) == 2
    assert result["best"] == study.best_trial.number
    assert all((tmp_path / "s" / name).is_file() for name in RESULT_FILES)
    assert "0 trained trial(s) so far, target 2" in out and "done in" in out and "dashboard: " in out


def test_a_rerun_resumes_the_study_to_a_higher_total(toy_search, capsys):
    search.run(toy_search)
    capsys.readouterr()
    search.run(SearchConfig(**{**toy_search.__dict__, "trials": 3}))
    assert "2 trained trial(s) so far, target 3" in capsys.readouterr().out
    assert trained_count(optuna.load_study(study_name="s", storage=toy_search.storage_url)) == 3


def test_ctrl_c_writes_the_reports_from_the_finished_trials_then_stops(toy_search, tmp_path, monkeypatch, capsys):
    real = workers.run_all

    def interrupted_after_the_trials(config, splits):
        real(config, splits)
        raise KeyboardInterrupt

    monkeypatch.setattr(workers, "run_all", interrupted_after_the_trials)
    with pytest.raises(KeyboardInterrupt):
        search.run(toy_search)
    assert "interrupted by SIGINT: writing the reports" in capsys.readouterr().err
    assert all((tmp_path / "s" / name).is_file() for name in RESULT_FILES)


def test_a_trial_stopped_by_a_signal_is_requeued_by_its_worker_and_trained_by_the_next_run(toy_search, monkeypatch,
                                                                                            capsys):
    from nas.engine.interrupts import Interrupted

    real = objective_mod.train

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(objective_mod, "train", stopped)
    with pytest.raises(KeyboardInterrupt):
        search.run(toy_search)
    # re-queued as it stopped, by the worker that ran it: another machine's worker may train it at once
    states = [t.state for t in optuna.load_study(study_name="s", storage=toy_search.storage_url).trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    monkeypatch.setattr(objective_mod, "train", real)
    capsys.readouterr()
    search.run(SearchConfig(**{**toy_search.__dict__, "trials": 1}))
    assert "re-queued" not in capsys.readouterr().out  # nothing left for the next run's own sweep
    first, retry = optuna.load_study(study_name="s", storage=toy_search.storage_url).trials[:2]
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == first.params and retry.user_attrs["seed"] == first.user_attrs["seed"]


def test_a_space_that_cannot_fit_the_budget_is_an_error_after_the_reports(toy_search, tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "run_all", lambda config, splits: True)
    with pytest.raises(SearchError, match="cannot fit it"):
        search.run(toy_search)
    assert (tmp_path / "s" / "trials.csv").is_file()


def test_a_budget_below_the_smallest_network_fails_before_any_study(toy_search, tmp_path):
    with pytest.raises(SearchError, match="below the smallest network"):
        search.run(SearchConfig(**{**toy_search.__dict__, "max_params": 10}))
    assert not (tmp_path / "nas.db").exists()


def test_a_sigterm_during_the_search_writes_the_reports_then_stops_with_its_signal(toy_search, tmp_path, monkeypatch,
                                                                                   capsys):
    def unhandled(signum, frame):
        pytest.fail("SIGTERM was not handled")

    monkeypatch.setattr(workers, "run_all", lambda config, splits: os.kill(os.getpid(), signal.SIGTERM))  # between trials
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(KeyboardInterrupt) as e:
            search.run(toy_search)
        assert signal.getsignal(signal.SIGTERM) is unhandled  # put back once the search is over
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert e.value.signum == signal.SIGTERM
    assert "interrupted by SIGTERM: writing the reports" in capsys.readouterr().err
    assert (tmp_path / "s" / "trials.csv").is_file()


def _failing_training(monkeypatch, error):
    def train(*args, **kwargs):
        raise error

    monkeypatch.setattr(objective_mod, "train", train)


def test_repeated_errors_stop_the_search_with_their_reason_and_trials_after_the_reports(toy_search, tmp_path,
                                                                                          monkeypatch):
    _failing_training(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(SearchFailed, match=r"5 trials in a row failed with the same error \(trials (\d+, ){4}\d+\): "
                                           r"OSError: \[Errno 28\] No space left on device$"):
        search.run(SearchConfig(**{**toy_search.__dict__, "trials": 10}))
    study = optuna.load_study(study_name="s", storage=toy_search.storage_url)
    assert trained_count(study) == 0 and sum(t.state == TrialState.FAIL for t in study.trials) == 5
    assert (tmp_path / "s" / "trials.csv").is_file()


def test_a_search_that_completes_no_trial_is_an_error(toy_search, monkeypatch):
    _failing_training(monkeypatch, TrainingDiverged("loss became nan at step 3"))
    with pytest.raises(SearchFailed, match=r"^no trial completed in study 's'; 2 failed, the last: "
                                           r"TrainingDiverged: loss became nan at step 3$"):
        search.run(toy_search)
