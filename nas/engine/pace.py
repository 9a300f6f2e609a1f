"""How long a candidate may train: by default a multiple of the pace of the study's own earlier trials, so that the
same search admits the same networks on a fast or a slow machine, and on small or large data. Machines that share a
study (PostgreSQL) are each held to their own pace."""
from __future__ import annotations

import socket
import statistics

import optuna

from nas.engine.train import TooSlow

KEY = "projected_s"  # user attr: the trial's training time projected after its first steps (nas.engine.train.TIME_CHECK_STEPS)
HOST_KEY = "host"  # user attr: the machine that made that projection
SLOWER_THAN_MEDIAN = 2.0  # too slow: projected over this many times the median of the earlier admitted trials
MIN_PEERS = 4  # no relative limit before this many earlier trials were admitted
NEVER_BELOW = 30.0  # seconds: a candidate projected under this is never too slow, whatever its peers took


def this_host() -> str:
    return socket.gethostname()


def time_limit(study: optuna.Study, number: int, seconds: float | None, host: str) -> tuple[float | None, str]:
    """The trial's limit in seconds (None: none yet) and how it was set. `seconds` (--trial-time-limit) is taken as
    it is; without it, the relative rule above over the trials `host` trained (and those that do not say where)."""
    if seconds is not None:
        return seconds, "--trial-time-limit"
    admitted = [t.user_attrs[KEY] for t in study.get_trials(deepcopy=False)
                if t.number < number and KEY in t.user_attrs and t.user_attrs.get("rejected") is None
                and t.user_attrs.get(HOST_KEY, host) == host]
    if len(admitted) < MIN_PEERS:
        return None, ""
    median = statistics.median(admitted)
    return (max(NEVER_BELOW, SLOWER_THAN_MEDIAN * median),
            f"{SLOWER_THAN_MEDIAN:g}x the median {median:.0f} s of {len(admitted)} earlier trials on this machine")


def check(projected: float, limit: float | None, why: str) -> None:
    """Raises TooSlow if `projected` seconds of training are over `limit`."""
    if limit is not None and projected > limit:
        raise TooSlow(f"projected {projected:.0f} s of training, over the {limit:.0f} s limit ({why})")
