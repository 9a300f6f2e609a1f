"""Optuna's RDB storage: opening it (SQLite or PostgreSQL, or the gRPC proxy in front of one), riding out a database
server's outage, heartbeats, and re-queueing the trials of dead workers."""
from __future__ import annotations

import datetime
import functools
import os
import random
import time
import warnings
from collections.abc import Collection

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from nas.errors import StorageError, first_line
from nas.engine import liveness, optuna_internals as internals
from nas.engine.retry import Outage, StorageUnreachable, stored_as

HEARTBEAT_SECONDS = 15
GRACE_SECONDS = 60  # a trial whose worker stopped beating this long ago is failed and re-queued
HEARTBEAT_ENV, GRACE_ENV = "NAS_HEARTBEAT_SECONDS", "NAS_GRACE_SECONDS"  # override both (tests use 1 and 3)
OPEN_ATTEMPTS = 5  # opening the storage, when concurrent workers race to create its tables
MAX_RETRY = 2  # a killed worker's trial is re-queued (same params) at most this many times
PROXY_SCHEME = "grpc://"  # the storage proxy's address: grpc://HOST:PORT
# a server's connections: a host that does not answer fails in 10 s, and a connection to a vanished server is found
# dead in about 30 s, rather than after the system's TCP timeouts (minutes)
SERVER_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                       "keepalives_count": 3, "tcp_user_timeout": 30_000}


def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy (and optuna-dashboard) need: postgresql:// means psycopg 3, not the psycopg2 default."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The URL with any password hidden, for messages; an unparsable URL shows its scheme only."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError or ValueError for a malformed URL
        return url.split("://", 1)[0] + "://***" if "@" in url else url


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: 15 and 60, or $NAS_HEARTBEAT_SECONDS / $NAS_GRACE_SECONDS."""
    values = []
    for env, default in ((HEARTBEAT_ENV, HEARTBEAT_SECONDS), (GRACE_ENV, None)):
        text = os.environ.get(env, "").strip()
        if not text:
            values.append(default)
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise StorageError(f"${env} must be a whole number of seconds, at least 1; got {text!r}")
        values.append(value)
    interval, grace = values
    if grace is None:
        grace = GRACE_SECONDS if HEARTBEAT_ENV not in os.environ else 4 * interval
    if grace <= interval:
        raise StorageError(f"${GRACE_ENV} ({grace}) must be longer than the heartbeat interval ({interval})")
    return interval, grace


def open_storage(url: str, wait: bool = False, connections: int | None = None) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a killed worker's trial is failed and retried, not stuck RUNNING. Once
    opened, a server's (PostgreSQL's) outages are waited out (RetryingStorage). One that cannot be reached now fails
    at once, unless `wait`: a worker's own open, when the command has already opened the storage once.
    grpc://HOST:PORT is the proxy `serve-storage` runs (nas.engine.proxy_client). `connections`: the most database
    connections the storage holds at once (the proxy's server)."""
    if url.startswith(PROXY_SCHEME):
        from nas.engine import proxy_client  # grpcio is an optional extra

        return proxy_client.open_proxy(url, wait)
    url = sqlalchemy_url(url)
    interval, grace = heartbeat_settings()
    if url.startswith("sqlite"):
        kind, engine_kwargs = optuna.storages.RDBStorage, {"connect_args": {"timeout": 60}}
    else:
        kind = RetryingStorage
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = dict(SERVER_CONNECT_ARGS)
    if connections is not None:
        engine_kwargs.update(pool_size=connections, max_overflow=0)

    def attempts(again: bool = False) -> optuna.storages.BaseStorage:
        for attempt in range(OPEN_ATTEMPTS):
            try:
                return kind(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
            except Exception as e:  # noqa: BLE001 - SQLAlchemy and driver errors vary; the user needs the reason
                # workers started together on a fresh PostgreSQL database race to create Optuna's tables
                racing = "duplicate key" in str(e) or "already exists" in str(e)
                if not racing or attempt == OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 + random.random())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return Outage(redact(url)).call(attempts) if wait and kind is RetryingStorage else attempts()
        except StorageUnreachable:
            raise
        except Exception as e:  # noqa: BLE001 - SQLAlchemy and driver errors vary; the user needs the reason
            raise StorageError(f"cannot open storage {redact(url)}: {first_line(e)}") from None


class RetryingStorage(internals.HookedRDBStorage):
    """Optuna's RDB storage, whose every call waits out an outage of the database server (a restart, a network cut)
    for up to `retry.RETRY_SECONDS`, then fails with one line (StorageUnreachable). Opening it does not wait.

    A write whose connection drops while it is committed may have been stored: its retry must not store it twice.
    Attribute, parameter, intermediate-value and heartbeat writes are upserts, harmless to repeat. The others:
    - a new trial carries a start time chosen here, to the microsecond: the retry first looks for a RUNNING trial
      of the study with that start time, and takes it rather than creating a second one;
    - finishing a trial: if the retry finds it already finished in the state asked, that was this call's write;
    - taking a WAITING trial: if the retry finds it already RUNNING, Optuna moves on to another trial, and the one
      taken may have been this call's, left without a worker; it gets one heartbeat, so that the stale-trial sweep
      fails and re-queues it a grace period later (one extra beat is harmless if another worker does own it).
    Re-queued (WAITING) trials have no start time to find them by; a lost commit there re-queues a trial twice.

    Every worker saw the same outage, and no heartbeat was recorded during it: for a grace period after it ends,
    this worker does not fail other workers' trials as stale, so that their heartbeats have time to resume.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # a server that cannot be reached fails here, at once
        self._outage = Outage(redact(self.url))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        del state["_outage"]
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._outage = Outage(redact(self.url))

    def _retried(self, attempt):
        def again_in_a_new_session(again: bool):
            if again:  # the thread's session went through the failure: start the retry with a fresh one
                self.scoped_session.remove()
            return attempt(again)
        return self._outage.call(again_in_a_new_session)

    def new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        """Creates a trial; a retry after a lost answer takes the trial that attempt stored, if any."""
        template = template_trial if template_trial is not None else FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.datetime.now(),
            datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
            intermediate_values={}, trial_id=-1)
        started = template.datetime_start if template.state == TrialState.RUNNING else None

        def attempt(again: bool) -> FrozenTrial:
            if again and started is not None:
                found = self._running_trial_started_at(study_id, started)
                if found is not None:
                    return found
            return internals.create_trial_once(self, study_id, template)

        return self._retried(attempt)

    def _running_trial_started_at(self, study_id: int, started: datetime.datetime) -> FrozenTrial | None:
        """The study's one RUNNING trial with that start time, if there is exactly one."""
        ids = internals.running_trials_started_at(self, study_id, started)
        return optuna.storages.RDBStorage.get_trial(self, ids[0]) if len(ids) == 1 else None

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        def attempt(again: bool) -> bool:
            try:
                done = optuna.storages.RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if again and state.is_finished():
                    if stored_as(optuna.storages.RDBStorage.get_trial(self, trial_id), state, values):
                        return True  # the failed attempt was stored; only its answer was lost
                raise
            if again and state == TrialState.RUNNING and not done:
                optuna.storages.RDBStorage.record_heartbeat(self, trial_id)
            return done

        return self._retried(attempt)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self._retried(lambda again: optuna.storages.RDBStorage.record_heartbeat(self, trial_id))
        except StorageUnreachable:
            pass  # the heartbeat thread stops quietly; the worker's own next call reports the outage

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, but none for a grace period after an outage."""
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if self._outage.recovered_within(grace):
            return []
        return self._retried(lambda again: internals.HookedRDBStorage.stale_trial_ids(self, study_id))


def _retrying(name: str):
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._retried(lambda again: method(self, *args, **kwargs))
    return call


# every other call that reaches the database, those _CachedStorage makes to its backend included (create_new_trial
# is not: it calls new_trial, whose retries must keep one start time)
RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
           "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
           "get_study_system_attrs", "get_all_studies", "set_trial_param",
           "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
           "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial", "get_all_trials",
           "get_n_trials", "get_best_trial", "get_trial_params", "get_trial_user_attrs",
           "get_trial_system_attrs") + internals.PRIVATE_DATABASE_CALLS
for _name in RETRIED:
    setattr(RetryingStorage, _name, _retrying(_name))


def fail_stale_trials(study: optuna.Study) -> None:
    """Fails (and re-queues as WAITING, same params) RUNNING trials whose worker stopped beating a grace period ago.

    Optuna does this before each new trial; a run also does it at its start and end, so a trial of a killed
    worker is cleaned up even when the study's total is already reached. Through the gRPC proxy, its server does it
    (nas.engine.liveness).
    """
    if liveness.relayed(internals.study_storage(study)):
        liveness.request_sweep(study)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    _beat_for_the_silent(study)


def requeue_interrupted(study: optuna.Study, numbers: Collection[int] | None = None) -> list[int]:
    """Re-queues (WAITING, same params and seed) each trial a signal stopped, at most MAX_RETRY times over, so a
    worker trains that candidate again; returns their numbers. Such a trial failed with no `fail_reason`, and no
    retry names it yet. `numbers`: only those trials (a worker re-queues its own, so no two processes race)."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback
    trials = study.get_trials(deepcopy=False)
    with warnings.catch_warnings():  # retry_history is experimental: its warning would reach the user's terminal
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {n for t in trials for n in retry.retry_history(t)}
        stopped = [t for t in trials if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs and t.params
                   and t.number not in retried and len(retry.retry_history(t)) < MAX_RETRY
                   and (numbers is None or t.number in numbers)]
        for trial in stopped:
            retry(max_retry=MAX_RETRY)(study, trial)
    return [t.number for t in stopped]


def _beat_for_the_silent(study: optuna.Study) -> None:
    """A worker killed between creating a trial and its first heartbeat leaves a RUNNING trial that Optuna never
    counts as stale. One beat for every RUNNING trial older than the grace period that never beat gives it a record,
    so the sweep one grace period later fails and re-queues it. A trial that has beaten gets none: sweeps in a row
    would keep a dead worker's trial alive."""
    storage = internals.study_storage(study)
    if not internals.heartbeats_on(storage):
        return
    backend = internals.rdb_storage(storage)  # the RDB storage under Optuna's cache
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=heartbeat_settings()[1])

    def never_beat(again: bool = False) -> list[int]:
        return internals.running_trials_never_beat(backend, internals.study_id(study), cutoff)

    for trial_id in backend._retried(never_beat) if isinstance(backend, RetryingStorage) else never_beat():
        storage.record_heartbeat(trial_id)
