"""Every use of Optuna's private names, in one place: what the storage's outage handling needs and Optuna offers no
public way to do. Each behaviour relied on here has a test in tests/test_storage.py; pyproject bounds Optuna below
its next major version for them."""
from __future__ import annotations

import contextlib
import copy
import datetime
from collections.abc import Iterator

import optuna
import sqlalchemy.orm
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages._rdb import models
from optuna.storages._rdb import storage as rdb_module
from optuna.trial import FrozenTrial, TrialState

# RDBStorage's private methods that reach the database and that Optuna's cache or study call directly
PRIVATE_DATABASE_CALLS = ("_set_trial_param", "_get_trials", "_get_best_trial_id")


class HookedRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose private hooks for creating a trial and finding stale trials are the public-named
    `new_trial` and `stale_trial_ids`, so that a subclass overrides those."""

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        return self.new_trial(study_id, template_trial)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    def new_trial(self, study_id: int, template: FrozenTrial | None = None) -> FrozenTrial:
        """Optuna's own trial creation (with its blind retries)."""
        return optuna.storages.RDBStorage._create_new_trial(self, study_id, template)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's own: RUNNING trials whose last heartbeat is older than the grace period."""
        return optuna.storages.RDBStorage._get_stale_trial_ids(self, study_id)


@contextlib.contextmanager
def session(storage: optuna.storages.RDBStorage) -> Iterator[sqlalchemy.orm.Session]:
    """A session of the storage's own, committed at the end, its errors wrapped as Optuna wraps them."""
    with rdb_module._create_scoped_session(storage.scoped_session) as s:  # looked up per call, so tests can patch it
        yield s


def create_trial_once(storage: optuna.storages.RDBStorage, study_id: int, template: FrozenTrial) -> FrozenTrial:
    """One attempt of Optuna's trial creation, without its blind retries (which may create the trial twice)."""
    with session(storage) as s:
        models.StudyModel.find_or_raise_by_id(study_id, s, for_update=True)
        trial = storage._get_prepared_new_trial(study_id, template, s)
        frozen = copy.deepcopy(template)
        frozen.number, frozen.datetime_start, frozen._trial_id = trial.number, trial.datetime_start, trial.trial_id
    return frozen


def running_trials_started_at(storage: optuna.storages.RDBStorage, study_id: int,
                              started: datetime.datetime) -> list[int]:
    """The ids of the study's RUNNING trials whose start time is `started`, as stored."""
    with session(storage) as s:
        running = s.query(models.TrialModel).filter(models.TrialModel.study_id == study_id,
                                                    models.TrialModel.state == TrialState.RUNNING)
        return [t.trial_id for t in running.all() if t.datetime_start == started]


def running_trials_never_beat(storage: optuna.storages.RDBStorage, study_id: int,
                              started_before: datetime.datetime) -> list[int]:
    """The ids of the study's RUNNING trials started before `started_before` that have no heartbeat record."""
    with session(storage) as s:
        running = (s.query(models.TrialModel)
                   .options(sqlalchemy.orm.selectinload(models.TrialModel.heartbeats))
                   .filter(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.RUNNING))
        return [t.trial_id for t in running.all()
                if not t.heartbeats and t.datetime_start and t.datetime_start < started_before]


def trials_with_a_heartbeat(storage: optuna.storages.RDBStorage) -> set[int]:
    """The ids of the trials that have a heartbeat record."""
    with session(storage) as s:
        return {row.trial_id for row in s.query(models.TrialHeartbeatModel).all()}


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage the study talks to (Optuna's cache over the RDB storage, for an RDB storage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage."""
    return study._study_id


def rdb_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage under Optuna's cache, or `storage` itself."""
    return getattr(storage, "_backend", storage)


def cached(storage: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """Optuna's in-process cache over an RDB storage, as a study wraps it (`get_storage`, "only for internal usage"):
    what Optuna's docs say its gRPC proxy server should serve, since a read of a study's trials through a bare RDB
    storage reads every trial from the database again."""
    return optuna.storages.get_storage(storage)


def heartbeats_on(storage: optuna.storages.BaseStorage) -> bool:
    """True if the storage records heartbeats (an RDB storage opened with a heartbeat interval)."""
    return is_heartbeat_enabled(storage)


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in its storage."""
    return trial._trial_id
