"""How long a candidate may train: by default a multiple of the pace of the study's own earlier trials, so that the
same search admits the same networks on a fast or a slow machine, and on small or large data. Machines that share a
study (PostgreSQL) are each held to their own pace."""
from __future__ import annotations

import math
import socket
import statistics

import optuna

from nas.engine.study import SIMILAR_SIZE
from nas.engine.train import TooSlow

KEY = "projected_s"  # user attr: the trial's training time projected after its first steps (nas.engine.train.TIME_CHECK_STEPS)
HOST_KEY = "host"  # user attr: the machine that made that projection
SLOWER_THAN_MEDIAN = 2.0  # too slow: projected over this many times the median of the earlier admitted trials
MIN_PEERS = 4  # no relative limit before this many earlier trials were admitted
NEVER_BELOW = 30.0  # seconds: a candidate projected under this is never too slow, whatever its peers took


def this_host() -> str:
    return socket.gethostname()


def time_limit(study: optuna.Study, number: int, seconds: float | None, host: str, params: int | None = None
               ) -> tuple[float | None, str]:
    """The trial's limit in seconds (None: none yet) and how it was set. `seconds` (--trial-time-limit) is taken as
    it is; without it, the relative rule above over the trials `host` trained (and those that do not say where).
    With `params` (the pareto mode, whose trials range over sizes), only over trials of similar size: those within
    SIMILAR_SIZE of it, else the MIN_PEERS nearest in size."""
    if seconds is not None:
        return seconds, "--trial-time-limit"
    admitted = [t.user_attrs for t in study.get_trials(deepcopy=False)
                if t.number < number and KEY in t.user_attrs and t.user_attrs.get("rejected") is None
                and t.user_attrs.get(HOST_KEY, host) == host]
    which = "earlier trials"
    if params is not None:
        admitted = similar_in_size([a for a in admitted if a.get("params")], params)
        which = "earlier trials of similar size"
    if len(admitted) < MIN_PEERS:
        return None, ""
    median = statistics.median(a[KEY] for a in admitted)
    return (max(NEVER_BELOW, SLOWER_THAN_MEDIAN * median),
            f"{SLOWER_THAN_MEDIAN:g}x the median {median:.0f} s of {len(admitted)} {which} on this machine")


def similar_in_size(trials: list[dict], params: int) -> list[dict]:
    """The trials (user attrs) within SIMILAR_SIZE of `params`, or if fewer than MIN_PEERS are, the MIN_PEERS
    nearest in size (by ratio)."""
    distance = {id(a): abs(math.log(a["params"] / params)) for a in trials}
    near = [a for a in trials if distance[id(a)] <= math.log(SIMILAR_SIZE)]
    return near if len(near) >= MIN_PEERS else sorted(trials, key=lambda a: distance[id(a)])[:MIN_PEERS]


def check(projected: float, limit: float | None, why: str) -> None:
    """Raises TooSlow if `projected` seconds of training are over `limit`."""
    if limit is not None and projected > limit:
        raise TooSlow(f"projected {projected:.0f} s of training, over the {limit:.0f} s limit ({why})")
