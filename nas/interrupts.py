"""Ctrl-C during a search: the running trial stops at once, a storage write is never cut in half."""
from __future__ import annotations

import contextlib
import signal
import threading


class CtrlC:
    """The first press stops the running trial: while the network trains, KeyboardInterrupt goes through the
    objective at once, and Optuna marks the trial FAIL. Anywhere else (above all inside a storage write, where an
    exception can leave SQLite's write lock held) the press is noted and takes effect at the next safe point:
    training resuming, the next trial starting, or the loop ending. So no trial is left RUNNING. A second press
    raises KeyboardInterrupt at once, wherever the program is."""

    def __init__(self):
        self.presses = 0
        self.is_training = False
        self._previous = None

    def install(self) -> None:
        self.presses, self.is_training = 0, False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        self.presses += 1
        if self.presses > 1 or self.is_training:
            raise KeyboardInterrupt

    def check(self) -> None:
        """A safe point: stop here if Ctrl-C was pressed."""
        if self.presses:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def trial(self):
        self.check()
        yield

    @contextlib.contextmanager
    def training(self):
        """The network trains: nothing here writes to the storage except inside `paused()`."""
        self.check()
        self.is_training = True
        try:
            yield
        finally:
            self.is_training = False

    @contextlib.contextmanager
    def paused(self):
        """A storage write within training (a pruner reading): a press waits until it is done."""
        was, self.is_training = self.is_training, False
        try:
            yield
        finally:
            self.is_training = was
        if was:
            self.check()


CTRL_C = CtrlC()
