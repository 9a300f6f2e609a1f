"""Live progress of a running search, read from its storage, so it counts every worker's trials: one updating line on
a terminal (tqdm), and plain lines at most every PLAIN_EVERY seconds elsewhere (pipes, CI logs, notebooks)."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass

import optuna
from tqdm import tqdm

from nas import logs
from nas.engine import study as study_mod

PLAIN_EVERY = 30.0  # seconds between plain progress lines, at most
MIN_POLL = 2.0  # seconds between reads of the storage, at least; more if a read takes long (a large study)


@dataclass(frozen=True)
class Snapshot:
    trained: int
    rejected: int
    best_acc: float | None
    best_params: int | None

    @classmethod
    def of(cls, study: optuna.Study) -> "Snapshot":
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        best = max(done, key=lambda t: (t.values[0], -t.user_attrs.get("params", 0)), default=None)
        return cls(sum(study_mod.is_trained(t) for t in trials), sum("rejected" in t.user_attrs for t in trials),
                   best and best.values[0], best and best.user_attrs.get("params"))

    def details(self) -> str:
        """Rejected, and the best so far: "3 rejected, best val 98.90% (21,300 params)"."""
        best = "" if self.best_acc is None else f", best val {self.best_acc:.2%} ({self.best_params or 0:,} params)"
        return f"{self.rejected} rejected{best}"


def clock(seconds: float) -> str:
    """1h02m, 4m05s or 12s."""
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Shows how a study moves toward `target` trained trials, from a thread that reads the storage."""

    def __init__(self, study: optuna.Study, target: int, stream=None):
        self.study, self.target = study, target
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.first = Snapshot.of(study)
        self.bar = self._bar() if _is_terminal(self.stream) else None
        self._printed_at, self._printed = self.started, self.first
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="progress", daemon=True)

    def _bar(self) -> tqdm:
        return tqdm(total=self.target, initial=min(self.first.trained, self.target), file=self.stream,
                    bar_format="{n}/{total} trained |{bar}| {elapsed}<{remaining}{postfix}", dynamic_ncols=True,
                    postfix=self.first.details(), leave=False)

    def _watch(self) -> None:
        poll = MIN_POLL
        while not self._done.wait(poll):
            began = time.monotonic()
            with contextlib.suppress(Exception):  # a storage hiccup: the workers report it; progress waits
                self.show(Snapshot.of(self.study))
            poll = max(MIN_POLL, 20 * (time.monotonic() - began))

    def show(self, now: Snapshot) -> None:
        if self.bar is not None:
            self.bar.n = min(now.trained, self.target)
            self.bar.set_postfix_str(now.details(), refresh=False)
            self.bar.refresh()
        elif now != self._printed and time.monotonic() - self._printed_at >= PLAIN_EVERY:
            logs.line(self.line(now))
            self._printed, self._printed_at = now, time.monotonic()

    def line(self, now: Snapshot) -> str:
        """progress: 12/50 trained, 3 rejected, best val 98.90% (21,300 params); 4m10s elapsed, about 9m20s left"""
        elapsed = time.monotonic() - self.started
        new = now.trained - self.first.trained
        left = self.target - now.trained
        left = f", about {clock(elapsed / new * left)} left" if new > 0 and left > 0 else ""
        return f"progress: {now.trained}/{self.target} trained, {now.details()}; {clock(elapsed)} elapsed{left}"

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)  # a read stuck in a storage outage must not hold up the reports
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    """A terminal with a width (tqdm draws nothing on a pseudo-terminal that reports none)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def shown(study: optuna.Study, target: int, quiet: bool):
    """Progress while the block runs, unless `quiet`."""
    if quiet:
        yield
        return
    with Progress(study, target):
        yield
