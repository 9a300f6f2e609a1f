"""nas/engine/liveness.py: heartbeats and stale-trial sweeps carried by two public storage calls through the gRPC
proxy. Synthetic: the relay over a SQLite storage in-process, and a stand-in for Optuna's proxy client that calls it
without a network; tests/test_storage_proxy.py runs the real proxy."""
import threading
import time
import warnings

import optuna
import pytest

from nas.engine import liveness, optuna_internals as internals
from nas.engine.storage import fail_stale_trials

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
X = {"x": optuna.distributions.FloatDistribution(0, 1)}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def relay_over(tmp_path, quiet=0.0, clock=None):
    """A relay over a SQLite storage with heartbeats (Optuna's cache over it, as the server serves it); the studies
    it sweeps are listed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'relay.db'}", heartbeat_interval=1, grace_period=2)
    swept = []
    relay = liveness.Relay(internals.cached(rdb), lambda study: swept.append(study.study_name), quiet=quiet,
                           clock=clock or Clock())
    return relay, swept


class InProcessProxy(optuna.storages.GrpcStorageProxy):
    """Optuna's proxy client with every storage call made on a relay in this process: no server, no network."""

    def __init__(self, relay):  # not super().__init__, which would open a channel
        self.relay, self.beats = relay, []

    def set_trial_system_attr(self, trial_id, key, value):
        if key == liveness.BEAT:
            self.beats.append(time.monotonic())
        self.relay.set_trial_system_attr(trial_id, key, value)


for _name in optuna.storages.BaseStorage.__abstractmethods__ - {"set_trial_system_attr"}:
    setattr(InProcessProxy, _name, lambda self, *args, _name=_name, **kwargs: getattr(self.relay, _name)(*args, **kwargs))


def test_a_beat_is_recorded_as_the_databases_heartbeat_and_not_stored(tmp_path):
    relay, _ = relay_over(tmp_path)
    study = optuna.create_study(storage=relay, study_name="beat")
    trial_id = internals.trial_id(study.ask(X))
    relay.set_trial_system_attr(trial_id, liveness.BEAT, True)
    relay.set_trial_system_attr(trial_id, "kept", 1)
    assert internals.trials_with_a_heartbeat(internals.rdb_storage(relay._storage)) == {trial_id}
    assert relay.get_trial(trial_id).system_attrs == {"kept": 1}


def test_a_sweep_is_asked_for_by_a_study_attr_at_most_once_a_second_and_nothing_is_stored(tmp_path):
    clock = Clock()
    relay, swept = relay_over(tmp_path, clock=clock)
    study = optuna.create_study(storage=relay, study_name="swept")
    study_id = internals.study_id(study)
    for _ in range(3):  # many workers asking at once: one sweep
        relay.set_study_system_attr(study_id, liveness.SWEEP, True)
    assert swept == ["swept"]
    clock.now += liveness.SWEEP_EVERY
    relay.set_study_system_attr(study_id, liveness.SWEEP, True)
    assert swept == ["swept", "swept"]
    relay.set_study_system_attr(liveness.PROBE_STUDY, liveness.SWEEP, True)  # a client's check: answered, no sweep
    relay.set_study_system_attr(study_id, "kept", 1)
    assert len(swept) == 2 and relay.get_study_system_attrs(study_id) == {"kept": 1}
    with pytest.raises(KeyError):  # a study that does not exist: the client's KeyError
        relay.set_study_system_attr(study_id + 1, liveness.SWEEP, True)


def test_a_restarted_proxy_sweeps_nothing_until_its_workers_could_beat_again(tmp_path):
    clock = Clock()
    relay, swept = relay_over(tmp_path, quiet=10, clock=clock)
    study_id = internals.study_id(optuna.create_study(storage=relay, study_name="quiet"))
    relay.set_study_system_attr(study_id, liveness.SWEEP, True)
    clock.now = 9.9
    relay.set_study_system_attr(study_id, liveness.SWEEP, True)
    assert swept == []
    clock.now = 10
    relay.set_study_system_attr(study_id, liveness.SWEEP, True)
    assert swept == ["quiet"]


def test_a_trial_beats_through_the_proxy_while_it_runs_after_a_sweep(tmp_path):
    relay, swept = relay_over(tmp_path)
    proxy = InProcessProxy(relay)
    study = optuna.create_study(storage=proxy, study_name="beating")
    ended = []

    def objective(trial):
        time.sleep(0.35)
        ended.append(time.monotonic())
        return trial.suggest_float("x", 0, 1)

    study.optimize(liveness.beating(study, objective, interval=0.05), n_trials=1)
    time.sleep(0.2)
    assert swept == ["beating"]  # before the trial, as Optuna sweeps on a storage with heartbeats
    assert len(proxy.beats) >= 4 and max(proxy.beats) <= ended[0] + 0.06, "beats while the trial runs, then stop"
    assert internals.trials_with_a_heartbeat(internals.rdb_storage(relay._storage)) == {
        internals.trial_id(study.trials[0])}


def test_a_beat_that_fails_does_not_stop_the_beats(tmp_path):
    relay, _ = relay_over(tmp_path)
    proxy = InProcessProxy(relay)
    calls = []

    def flaky(trial_id, key, value):
        calls.append(key)
        if len(calls) == 1:
            raise ConnectionError("the proxy is restarting")

    proxy.set_trial_system_attr = flaky
    stop = threading.Event()
    beater = threading.Thread(target=liveness._beat, args=(proxy, 0, 0.02, stop))
    beater.start()
    time.sleep(0.15)
    stop.set()
    beater.join(timeout=1)
    assert len(calls) >= 3 and not beater.is_alive()


def test_the_sweep_of_a_study_behind_the_proxy_is_asked_of_the_proxy(tmp_path):
    relay, swept = relay_over(tmp_path)
    study = optuna.create_study(storage=InProcessProxy(relay), study_name="asked")
    fail_stale_trials(study)
    assert swept == ["asked"]


def test_a_storage_with_heartbeats_of_its_own_is_left_to_optuna(tmp_path):
    relay, _ = relay_over(tmp_path)
    study = optuna.create_study(storage=relay._storage, study_name="direct")

    def objective(trial):
        return 0.0

    assert liveness.beating(study, objective, interval=1) is objective
    assert not liveness.relayed(relay._storage) and liveness.relayed(InProcessProxy(relay))
