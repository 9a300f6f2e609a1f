"""Optuna's RDB storage: opening it (SQLite or PostgreSQL), heartbeats, and re-queueing the trials of dead workers."""
from __future__ import annotations

import datetime
import os
import random
import time
import warnings

import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from nas.errors import StudyError

HEARTBEAT_SECONDS = 15
GRACE_SECONDS = 60  # a trial whose worker stopped beating this long ago is failed and re-queued
HEARTBEAT_ENV, GRACE_ENV = "NAS_HEARTBEAT_SECONDS", "NAS_GRACE_SECONDS"  # override both (tests use 1 and 3)
OPEN_ATTEMPTS = 5  # opening the storage, when concurrent workers race to create its tables
MAX_RETRY = 2  # a killed worker's trial is re-queued (same params) at most this many times


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
            raise StudyError(f"${env} must be a whole number of seconds, at least 1; got {text!r}")
        values.append(value)
    interval, grace = values
    if grace is None:
        grace = GRACE_SECONDS if HEARTBEAT_ENV not in os.environ else 4 * interval
    if grace <= interval:
        raise StudyError(f"${GRACE_ENV} ({grace}) must be longer than the heartbeat interval ({interval})")
    return interval, grace


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so a killed worker's trial is failed and retried, not stuck RUNNING."""
    url = sqlalchemy_url(url)
    interval, grace = heartbeat_settings()
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
            except Exception as e:  # noqa: BLE001 - SQLAlchemy and driver errors vary; the user needs the reason
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                # workers started together on a fresh PostgreSQL database race to create Optuna's tables
                racing = "duplicate key" in reason or "already exists" in reason
                if not racing or attempt == OPEN_ATTEMPTS - 1:
                    raise StudyError(f"cannot open storage {redact(url)}: {reason}") from None
                time.sleep(0.5 + random.random())


def fail_stale_trials(study: optuna.Study) -> None:
    """Fails (and re-queues as WAITING, same params) RUNNING trials whose worker stopped beating a grace period ago.

    Optuna does this before each new trial; a run also does it at its start and end, so a trial of a killed
    worker is cleaned up even when the study's total is already reached.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    _beat_for_the_silent(study)


def _beat_for_the_silent(study: optuna.Study) -> None:
    """A worker killed between creating a trial and its first heartbeat leaves a RUNNING trial that Optuna never
    counts as stale. One beat for every RUNNING trial older than the grace period gives it a record, so the sweep one
    grace period later fails and re-queues it; a live trial only gets an extra beat."""
    storage = study._storage
    if not optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        return
    grace = heartbeat_settings()[1]
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.datetime_start and (now - trial.datetime_start).total_seconds() > grace:
            storage.record_heartbeat(trial._trial_id)
