"""Heartbeats and stale-trial sweeps through Optuna's gRPC storage proxy. Its client, GrpcStorageProxy, is a
BaseStorage but not a BaseHeartbeat: Optuna neither beats through it nor fails stale trials. Two public storage calls
carry them instead, and the proxy's server (`serve-storage`, which serves a `Relay`) gives them their meaning:
- a worker's running trial beats by setting the trial system attr BEAT; the server records it as the database's own
  heartbeat, with the database's clock, so workers on the database directly see it too; no attr is stored;
- a worker asks for a sweep by setting the study system attr SWEEP; the server fails and re-queues the study's
  stale trials as a worker on the database does (nas.engine.storage.fail_stale_trials); nothing is stored."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import optuna

from nas.engine import optuna_internals as internals

BEAT, SWEEP = "nas:heartbeat", "nas:sweep"
PROBE_STUDY = -1  # a sweep asked for this study id only tells a client that the server relays
SWEEP_EVERY = 1.0  # seconds: the server sweeps a study at most this often, however many workers ask


def relayed(storage: optuna.storages.BaseStorage) -> bool:
    """True for a storage whose heartbeats and sweeps go through these calls: Optuna's gRPC proxy client."""
    return isinstance(storage, optuna.storages.GrpcStorageProxy)


def request_sweep(study: optuna.Study) -> None:
    """Asks the proxy's server to fail and re-queue the study's stale trials."""
    internals.study_storage(study).set_study_system_attr(internals.study_id(study), SWEEP, True)


def beating(study: optuna.Study, objective: Callable[[optuna.Trial], object], interval: float):
    """`objective`, whose trials beat every `interval` seconds while they run, when the study's storage is the proxy;
    a sweep comes first, as Optuna sweeps before each trial on a storage with heartbeats. Other storages: unchanged."""
    storage = internals.study_storage(study)
    if not relayed(storage):
        return objective

    def run(trial: optuna.Trial):
        request_sweep(study)
        stop = threading.Event()
        threading.Thread(target=_beat, args=(storage, internals.trial_id(trial), interval, stop), name="heartbeat",
                         daemon=True).start()
        try:
            return objective(trial)
        finally:
            stop.set()  # not joined: a beat waiting out an outage must not hold up the trial's end
    return run


def _beat(storage: optuna.storages.BaseStorage, trial_id: int, interval: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            storage.set_trial_system_attr(trial_id, BEAT, True)
        except Exception:  # noqa: BLE001 - the proxy is unreachable: the worker's own next call reports it
            pass
        stop.wait(interval)


class Relay:
    """The storage the proxy's server serves: every call goes to `storage` (Optuna's cache over the database), but a
    BEAT is recorded as the trial's heartbeat and a SWEEP runs `sweep` on the study. For `quiet` seconds after the
    server starts it sweeps nothing: workers whose beats could not reach it while it was down beat again first."""

    def __init__(self, storage: optuna.storages.BaseStorage, sweep: Callable[[optuna.Study], None], quiet: float,
                 clock: Callable[[], float] = time.monotonic):
        self._storage, self._sweep, self._clock = storage, sweep, clock
        self._quiet_until = clock() + quiet
        self._lock = threading.Lock()
        self._swept: dict[int, float] = {}  # study id -> when it was last swept
        self._studies: dict[int, optuna.Study] = {}

    def __getattr__(self, name: str):
        return getattr(self._storage, name)

    def set_trial_system_attr(self, trial_id: int, key: str, value) -> None:
        if key == BEAT:
            self._storage.record_heartbeat(trial_id)
        else:
            self._storage.set_trial_system_attr(trial_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value) -> None:
        if key != SWEEP:
            self._storage.set_study_system_attr(study_id, key, value)
        elif study_id != PROBE_STUDY and self._due(study_id):
            self._sweep(self._study(study_id))

    def _due(self, study_id: int) -> bool:
        """Whether to sweep the study now: past the quiet start, and not swept within SWEEP_EVERY."""
        now = self._clock()
        with self._lock:
            if now < self._quiet_until or now - self._swept.get(study_id, -SWEEP_EVERY) < SWEEP_EVERY:
                return False
            self._swept[study_id] = now
            return True

    def _study(self, study_id: int) -> optuna.Study:
        if study_id not in self._studies:  # KeyError for a study that does not exist: the client's KeyError too
            name = self._storage.get_study_name_from_id(study_id)
            self._studies[study_id] = optuna.load_study(study_name=name, storage=self._storage,
                                                        sampler=optuna.samplers.RandomSampler())
        return self._studies[study_id]
