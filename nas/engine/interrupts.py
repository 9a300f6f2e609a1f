"""Stopping a search on SIGINT (Ctrl-C) or SIGTERM: the running trial stops at once, a storage write is never cut in
half, and --jobs workers act on the signals their parent gets."""
from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from multiprocessing import resource_tracker

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RELAY = signal.SIGUSR1  # within a worker: wakes the main thread to act on the parent's signals


class Interrupted(KeyboardInterrupt):
    """Raised to stop on a signal; the command exits 128 + `signum`: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class CtrlC:
    """The first SIGINT or SIGTERM stops the running trial: while the network trains (code that is `stoppable`),
    Interrupted goes through the objective at once, and Optuna marks the trial FAIL. Anywhere else (above all inside
    a storage write, where an exception can leave SQLite's write lock held) the signal is noted and takes effect at
    the next safe point: training resuming, the next trial starting, or the loop ending. So no trial is left RUNNING.
    A second signal raises Interrupted at once, wherever the program is.

    A --jobs worker ignores SIGINT and SIGTERM (see `shielded`): a terminal's Ctrl-C reaches the whole process group,
    and would count twice if the parent's relay came on top. The parent's count comes through `relay` instead."""

    def __init__(self):
        self.presses = 0
        self.signum = signal.SIGINT  # the first signal's, for the exit code
        self.is_stoppable = False
        self._previous = {}

    def install(self, relayed: bool = False) -> None:
        """Handles SIGINT and SIGTERM, or in a worker (`relayed`) the parent's signals passed on through `relay`."""
        self.presses, self.signum, self.is_stoppable = 0, signal.SIGINT, False
        if threading.current_thread() is threading.main_thread():
            handlers = {RELAY: self._act} if relayed else dict.fromkeys(STOP_SIGNALS, self._on_signal)
            for signum, handler in handlers.items():
                self._previous[signum] = signal.signal(signum, handler)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if not self.presses:
            self.signum = signum
        self.presses += 1
        self._act()

    def _act(self, *_) -> None:
        if self.presses > 1 or self.is_stoppable:
            raise Interrupted(self.signum)

    def relay(self, presses: int) -> None:
        """From a worker's watch thread: the parent has had `presses` signals. The main thread acts on them as on its
        own; setting the count, not signalling once per press, means two presses close together are not merged."""
        if presses > self.presses:
            self.presses = presses
            signal.pthread_kill(threading.main_thread().ident, RELAY)

    def check(self) -> None:
        """A safe point: stop here if a signal came."""
        if self.presses:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def trial(self):
        self.check()
        yield

    @contextlib.contextmanager
    def stoppable(self):
        """Code that writes nothing to the storage, except inside `paused()`: training, loading data. A signal stops
        it at once."""
        self.check()
        self.is_stoppable = True
        try:
            yield
        finally:
            self.is_stoppable = False

    @contextlib.contextmanager
    def paused(self):
        """A storage write within training (a pruner reading): a signal waits until it is done."""
        was, self.is_stoppable = self.is_stoppable, False
        try:
            yield
        finally:
            self.is_stoppable = was
        if was:
            self.check()


CTRL_C = CtrlC()


@contextlib.contextmanager
def held():
    """SIGINT and SIGTERM that come in here wait until its end. Processes started in here begin with both blocked,
    until `shielded` ignores them: a terminal's Ctrl-C cannot reach a worker before it is ready."""
    resource_tracker.ensure_running()  # it unblocks both signals when it starts, so it must be running already
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def shielded(module: str, function: str, *args) -> None:
    """A worker process's entry, started within `held`: ignores SIGINT and SIGTERM, as the parent relays every signal
    it gets, then imports `module` and runs `function(*args)`. The arguments must be plain values, since unpickling
    a config would import torch before this runs."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    getattr(importlib.import_module(module), function)(*args)
