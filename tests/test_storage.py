"""Opening the storage, hiding passwords, riding out outages, heartbeats, and re-queueing the trials of dead
workers. The outage tests inject the faults into SQLite; tests/test_parallel.py stops a real PostgreSQL server."""
import contextlib
import inspect
import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine import optuna_internals as internals
from nas.engine import retry
from nas.engine import storage as storage_mod
from nas.errors import StorageError
from nas.engine.retry import StorageUnreachable
from tests.conftest import refused
from nas.engine.storage import MAX_RETRY, RetryingStorage, fail_stale_trials, heartbeat_settings, open_storage, redact, requeue_interrupted, sqlalchemy_url

# the tests drive trials with ask and tell, without Study.optimize: Optuna warns that heartbeats then do not run
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://nas:s3cret@db.example:5432/nas", "postgresql://nas:***@db.example:5432/nas"),
    ("postgresql+psycopg://nas:p%40ss@h/db", "postgresql+psycopg://nas:***@h/db"),
    ("sqlite:///results/nas.db", "sqlite:///results/nas.db"),
    ("postgresql://u:pw@h:notaport/db", "postgresql://***"),
])
def test_passwords_never_reach_a_message(url, shown):
    assert redact(url) == shown


def test_postgresql_urls_name_the_psycopg_3_driver():
    assert sqlalchemy_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"


def test_heartbeat_periods_default_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv(storage_mod.HEARTBEAT_ENV, raising=False)
    monkeypatch.delenv(storage_mod.GRACE_ENV, raising=False)
    assert heartbeat_settings() == (15, 60)
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "2")
    assert heartbeat_settings() == (2, 8)
    monkeypatch.setenv(storage_mod.GRACE_ENV, "2")
    with pytest.raises(StorageError, match="longer than the heartbeat"):
        heartbeat_settings()
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "soon")
    with pytest.raises(StorageError, match="NAS_HEARTBEAT_SECONDS"):
        heartbeat_settings()


def test_an_unusable_storage_is_one_error_without_the_password():
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        open_storage("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "cannot open storage" in str(caught.value) and "hunter2" not in str(caught.value)
    assert time.monotonic() - started < 5, "an unreachable storage at the start is not waited for"


def test_a_trial_that_never_beat_is_failed_and_requeued(tmp_path, monkeypatch):
    """A worker killed between creating a trial and its first heartbeat: two sweeps a grace period apart clean it."""
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "1")
    monkeypatch.setenv(storage_mod.GRACE_ENV, "2")
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'hb.db'}"), study_name="hb")
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # RUNNING, and no heartbeat ever recorded
    time.sleep(2.5)
    fail_stale_trials(study)  # Optuna alone skips it; our sweep gives it its first beat
    assert study.trials[0].state == TrialState.RUNNING
    time.sleep(3.5)  # SQLite's now() has one-second resolution: leave a whole second over the 2 s grace
    fail_stale_trials(study)
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and TrialState.WAITING in states[1:]


def test_sweeps_in_a_row_do_not_keep_a_dead_workers_trial_alive(tmp_path, monkeypatch):
    """A worker waiting for the running trials sweeps every half second: only a trial that never beat gets a beat from
    a sweep, so one whose worker beat and then died goes stale a grace period after its last beat."""
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "1")
    monkeypatch.setenv(storage_mod.GRACE_ENV, "2")
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'hb.db'}"), study_name="hb")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    # it beat once, then its worker was killed
    internals.study_storage(study).record_heartbeat(internals.trial_id(trial))
    deadline = time.monotonic() + 6  # its beat is stale 2-3 s from now (SQLite's clock has one-second resolution)
    while study.trials[0].state == TrialState.RUNNING and time.monotonic() < deadline:
        fail_stale_trials(study)
        time.sleep(0.5)
    assert study.trials[0].state == TrialState.FAIL


def test_a_trial_stopped_by_a_signal_is_requeued_once_with_its_params_and_seed(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'rq.db'}"), study_name="rq")
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for fail_reason in (None, "TrainingDiverged: loss became nan"):  # stopped by a signal; failed by its candidate
        trial = study.ask(x)
        trial.set_user_attr("seed", 7)
        if fail_reason:
            trial.set_user_attr("fail_reason", fail_reason)
        study.tell(trial, state=TrialState.FAIL)
    study.tell(study.ask(), state=TrialState.FAIL)  # stopped before sampling anything
    assert requeue_interrupted(study, [1, 2]) == []  # a worker re-queues only its own trial
    assert requeue_interrupted(study) == [0]
    assert requeue_interrupted(study) == []  # already re-queued
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == study.trials[0].params and waiting[0].user_attrs["seed"] == 7
    for _ in range(MAX_RETRY):  # each retry is stopped again: MAX_RETRY retries in all, then no more
        trial = study.ask(x)
        assert trial.params == study.trials[0].params
        study.tell(trial, state=TrialState.FAIL)
        requeue_interrupted(study)
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert sum(t.params == study.trials[0].params for t in study.trials) == 1 + MAX_RETRY


def test_a_workers_own_open_waits_out_an_outage_but_the_first_open_does_not(monkeypatch):
    calls = []

    def flaky(url, **kwargs):  # the server is down for the first two tries
        calls.append(url)
        if len(calls) <= 2:
            raise refused()
        return "storage"
    monkeypatch.setattr(storage_mod, "RetryingStorage", flaky)
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.01)
    with pytest.raises(StorageError, match="cannot open storage postgresql.*Connection refused"):
        open_storage("postgresql://u:p@db/nas")
    assert len(calls) == 1
    calls.clear()
    assert open_storage("postgresql://u:p@db/nas", wait=True) == "storage" and len(calls) == 3


@pytest.fixture
def retrying(tmp_path):
    """A RetryingStorage over SQLite, which waits for nothing between its attempts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RetryingStorage(f"sqlite:///{tmp_path / 'retry.db'}", heartbeat_interval=1, grace_period=2)
    storage._outage._sleep = lambda seconds: None
    return storage


def inject(monkeypatch, refuse=0, lose_answer=False):
    """Faults in the next sessions: `refuse` sessions fail to connect; with `lose_answer`, the next one that gets
    through commits and then loses its connection, so the write is stored but its caller gets an error. Each error
    is wrapped as Optuna wraps SQLAlchemy's."""
    real = internals.rdb_module._create_scoped_session
    left = {"refuse": refuse, "lose": lose_answer}

    def fail(error):
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from error

    @contextlib.contextmanager
    def session(*args, **kwargs):
        if left["refuse"]:
            left["refuse"] -= 1
            fail(refused())
        with real(*args, **kwargs) as s:
            yield s
        if left["lose"]:
            left["lose"] = False
            fail(refused("server closed the connection unexpectedly"))
    monkeypatch.setattr(internals.rdb_module, "_create_scoped_session", session)
    return left


def test_a_search_goes_on_through_an_outage(retrying, monkeypatch):
    """Without the retries, Optuna dies at the first refused connection (an UnboundLocalError when it is the tell)."""
    study = optuna.create_study(storage=retrying, study_name="outage")
    left = inject(monkeypatch)

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        left["refuse"] = 3  # the server goes down during every trial
        trial.report(x, 1)
        left["refuse"] = 3
        return x

    study.optimize(objective, n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(t.intermediate_values == {1: t.value} for t in study.trials)


def test_a_new_trial_whose_commit_answer_was_lost_is_not_made_twice(retrying, monkeypatch):
    study = optuna.create_study(storage=retrying, study_name="lost-create")
    inject(monkeypatch, lose_answer=True)
    trial_id = retrying.create_new_trial(internals.study_id(study))  # what Study.ask does, less its reads
    assert [(internals.trial_id(t), t.number, t.state) for t in study.get_trials()] == \
           [(trial_id, 0, TrialState.RUNNING)]
    study.tell(0, 0.5)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_a_finish_whose_commit_answer_was_lost_is_not_an_error(retrying, monkeypatch):
    study = optuna.create_study(storage=retrying, study_name="lost-finish")
    trial = study.ask()
    inject(monkeypatch, lose_answer=True)
    assert retrying.set_trial_state_values(internals.trial_id(trial), TrialState.COMPLETE, [0.5]) is True
    assert study.get_trials()[0].state == TrialState.COMPLETE and study.get_trials()[0].value == 0.5
    # a trial that someone else finished (the stale sweep) is still an error
    trial = study.ask()
    retrying.set_trial_state_values(internals.trial_id(trial), TrialState.FAIL)
    inject(monkeypatch, refuse=1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        retrying.set_trial_state_values(internals.trial_id(trial), TrialState.COMPLETE, [0.5])


def test_a_waiting_trial_taken_with_a_lost_answer_is_left_for_the_stale_sweep(retrying, monkeypatch):
    study = optuna.create_study(storage=retrying, study_name="lost-take")
    study.enqueue_trial({"x": 0.5})
    waiting = study.get_trials()[0]
    inject(monkeypatch, lose_answer=True)
    # the retry finds it RUNNING, as if another worker had taken it: Optuna moves on to another trial
    assert retrying.set_trial_state_values(internals.trial_id(waiting), TrialState.RUNNING) is False
    # it has a heartbeat now, so the sweep fails it a grace period later, whoever took it
    assert internals.trial_id(waiting) in internals.trials_with_a_heartbeat(retrying)


def test_after_an_outage_no_trial_is_failed_as_stale_for_a_grace_period(retrying, monkeypatch):
    """No worker could beat during the outage: the others get a grace period to resume before any sweep."""
    study = optuna.create_study(storage=retrying, study_name="stale")
    trial = study.ask()
    retrying.record_heartbeat(internals.trial_id(trial))
    time.sleep(3.2)  # stale, by SQLite's one-second clock
    inject(monkeypatch, refuse=1)
    assert retrying.get_trial(internals.trial_id(trial)).state == TrialState.RUNNING  # meets the outage, waits it out
    fail_stale_trials(study)
    assert study.trials[0].state == TrialState.RUNNING
    retrying._outage.recovered -= 2  # a grace period later
    fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL


def test_a_heartbeat_that_cannot_be_recorded_does_not_kill_its_thread(retrying, monkeypatch):
    study = optuna.create_study(storage=retrying, study_name="beat")
    trial = study.ask()
    retrying._outage.seconds = 0  # give up at the first failure
    inject(monkeypatch, refuse=1)
    retrying.record_heartbeat(internals.trial_id(trial))  # no exception: the worker's own next call reports the outage
    assert retrying._outage.gave_up and internals.trial_id(trial) not in internals.trials_with_a_heartbeat(retrying)
    retrying.record_heartbeat(internals.trial_id(trial))  # the server is back: the thread's next beat is recorded
    assert internals.trial_id(trial) in internals.trials_with_a_heartbeat(retrying) and not retrying._outage.gave_up


def test_giving_up_is_found_behind_the_error_optuna_raises_instead(retrying, monkeypatch):
    """Optuna's optimize turns a storage error met while finishing a trial into an UnboundLocalError."""
    study = optuna.create_study(storage=retrying, study_name="gave-up")
    retrying._outage.seconds = 0  # give up at the first failure
    left = inject(monkeypatch)

    def objective(trial):
        left["refuse"] = 100
        return 0.5

    with pytest.raises(Exception) as caught:
        study.optimize(objective, n_trials=1)
    found = retry.unreachable(caught.value)
    assert isinstance(found, StorageUnreachable) and "Connection refused" in str(found)
    assert retry.unreachable(ValueError("x")) is None


def test_every_call_that_opens_a_session_is_retried(retrying, monkeypatch):
    """A guard for Optuna upgrades: a search's every call that reaches the database (through Optuna's cache, its
    heartbeat thread, the stale sweep, the retry callback) is made inside a retry."""
    real, outside = internals.rdb_module._create_scoped_session, []

    @contextlib.contextmanager
    def session(*args, **kwargs):
        if not getattr(retrying._outage._inside, "active", False):
            outside.append(next(f.function for f in inspect.stack()[2:] if "optuna" in f.filename))
        with real(*args, **kwargs) as s:
            yield s
    monkeypatch.setattr(internals.rdb_module, "_create_scoped_session", session)
    study = optuna.create_study(storage=retrying, study_name="all-calls", direction="maximize")
    study.set_user_attr("space", "small")
    study.enqueue_trial({"x": 0.5})

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("seed", 1)
        trial.report(x, 1)
        return x

    study.optimize(objective, n_trials=3)
    failed = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(failed, state=TrialState.FAIL)
    requeue_interrupted(study)
    fail_stale_trials(study)
    loaded = optuna.load_study(study_name="all-calls", storage=retrying)
    assert loaded.best_trial.value == max(t.value for t in loaded.trials if t.value is not None)
    assert len(loaded.trials_dataframe()) == 5 and optuna.get_all_study_summaries(retrying)
    retrying.get_trial_params(internals.trial_id(failed))
    optuna.delete_study(study_name="all-calls", storage=retrying)
    assert outside == []
