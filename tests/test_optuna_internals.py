"""nas/engine/optuna_internals.py: each behaviour of Optuna's private names that the storage relies on, asserted
on a real SQLite storage, so that an Optuna release that changes one fails here first."""
import datetime
import warnings

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from nas.engine import optuna_internals as internals

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
X = {"x": optuna.distributions.FloatDistribution(0, 1)}


def rdb(path, **heartbeat) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(f"sqlite:///{path}", **heartbeat)


def test_a_studys_storage_ids_and_the_rdb_storage_under_optunas_cache(tmp_path):
    storage = rdb(tmp_path / "ids.db")
    study = optuna.create_study(storage=storage, study_name="ids")
    trial = study.ask(X)
    assert internals.rdb_storage(internals.study_storage(study)) is storage
    assert internals.rdb_storage(storage) is storage
    assert internals.study_id(study) == storage.get_study_id_from_name("ids")
    stored = storage.get_trial(internals.trial_id(trial))
    assert stored.number == trial.number and stored.params == trial.params
    assert internals.trial_id(study.trials[0]) == internals.trial_id(trial)


def test_optunas_cache_over_an_rdb_storage_sees_other_writers_and_passes_heartbeats_on(tmp_path):
    """What the proxy's server serves: Optuna's cache, whose reads still see every worker's trials."""
    storage = rdb(tmp_path / "cache.db", heartbeat_interval=1, grace_period=2)
    cache = internals.cached(storage)
    assert cache is not storage and internals.rdb_storage(cache) is storage and internals.heartbeats_on(cache)
    study = optuna.create_study(storage=cache, study_name="cache")
    assert study.get_trials() == []
    elsewhere = optuna.load_study(study_name="cache", storage=rdb(tmp_path / "cache.db")).ask(X)
    assert [t.number for t in study.get_trials()] == [elsewhere.number]
    cache.record_heartbeat(internals.trial_id(elsewhere))
    assert internals.trials_with_a_heartbeat(storage) == {internals.trial_id(elsewhere)}


def test_heartbeats_are_on_only_for_an_rdb_storage_opened_with_an_interval(tmp_path):
    assert internals.heartbeats_on(rdb(tmp_path / "on.db", heartbeat_interval=1, grace_period=2))
    assert not internals.heartbeats_on(rdb(tmp_path / "off.db"))
    study = optuna.create_study(storage=rdb(tmp_path / "cached.db", heartbeat_interval=1, grace_period=2))
    assert internals.heartbeats_on(internals.study_storage(study))  # seen through Optuna's cache too


def test_running_trials_found_by_start_time_by_missing_heartbeat_and_by_heartbeat(tmp_path):
    storage = rdb(tmp_path / "q.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="q")
    beating, silent, finished = study.ask(X), study.ask(X), study.ask(X)
    study.tell(finished, 0.5)
    storage.record_heartbeat(internals.trial_id(beating))
    sid = internals.study_id(study)
    started = storage.get_trial(internals.trial_id(silent)).datetime_start
    assert internals.running_trials_started_at(storage, sid, started) == [internals.trial_id(silent)]
    assert internals.running_trials_started_at(storage, sid, started + datetime.timedelta(microseconds=1)) == []
    later = datetime.datetime.now() + datetime.timedelta(seconds=1)
    assert internals.running_trials_never_beat(storage, sid, later) == [internals.trial_id(silent)]
    assert internals.running_trials_never_beat(storage, sid, started - datetime.timedelta(seconds=1)) == []
    assert internals.trials_with_a_heartbeat(storage) == {internals.trial_id(beating)}


def test_a_session_commits_at_its_end_and_rolls_back_a_failed_commit(tmp_path):
    storage = rdb(tmp_path / "s.db")
    study = optuna.create_study(storage=storage, study_name="s")
    with internals.session(storage) as s:
        s.add(internals.models.StudyUserAttributeModel(study_id=internals.study_id(study), key="k", value_json='"v"'))
    assert storage.get_study_user_attrs(internals.study_id(study)) == {"k": "v"}
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with internals.session(storage) as s:  # the same key again breaks the table's unique constraint
            s.add(internals.models.StudyUserAttributeModel(study_id=internals.study_id(study), key="k",
                                                           value_json='"w"'))
    assert storage.get_study_user_attrs(internals.study_id(study)) == {"k": "v"}  # rolled back; the storage works


def test_one_creation_attempt_stores_the_template_and_numbers_it(tmp_path):
    """optuna_internals.create_trial_once: a queued trial's params and attrs are stored, and it gets the next number."""
    storage = rdb(tmp_path / "once.db")
    study = optuna.create_study(storage=storage, study_name="once")
    study.tell(study.ask(), 0.1)
    template = optuna.trial.create_trial(state=TrialState.WAITING, params={"x": 0.5}, user_attrs={"seed": 7},
                                         distributions={"x": optuna.distributions.FloatDistribution(0, 1)})
    made = internals.create_trial_once(storage, internals.study_id(study), template)
    stored = storage.get_trial(internals.trial_id(made))
    assert (made.number, stored.number, stored.state) == (1, 1, TrialState.WAITING)
    assert (stored.params, stored.user_attrs) == ({"x": 0.5}, {"seed": 7})


def test_optunas_trial_creation_and_stale_sweep_reach_the_storages_hooks(tmp_path):
    """RetryingStorage's care for lost answers and outages rests on Optuna calling these two hooks
    (optuna_internals.HookedRDBStorage): creating every trial, queued ones included, and each stale sweep."""
    calls = []

    class Recording(internals.HookedRDBStorage):
        def new_trial(self, study_id, template=None):
            calls.append("new")
            return super().new_trial(study_id, template)

        def stale_trial_ids(self, study_id):
            calls.append("stale")
            return super().stale_trial_ids(study_id)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = Recording(f"sqlite:///{tmp_path / 'hooks.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="hooks")
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert calls.count("new") == 2 and "stale" in calls  # the queued trial, then one more; a sweep before each
    assert len(study.trials) == 2 and study.trials[0].params == {"x": 0.5}
