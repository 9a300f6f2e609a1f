"""Riding out a storage outage: a call that fails because the database server is down or unreachable is retried
with backoff for up to 90 s, with one line when the outage starts and one when it ends; then one error."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc

from nas.errors import StorageError, first_line
from nas.logs import LOGGER

RETRY_SECONDS = 90.0  # how long an outage is waited out before the search gives up
FIRST_DELAY, MAX_DELAY = 0.5, 5.0  # backoff between attempts: 0.5, 1, 2, 4, then every 5 s

T = TypeVar("T")


class StorageUnreachable(StorageError):
    """The storage stayed unreachable for the whole retry period."""


def _chain(error: BaseException):
    """`error`, then what caused it, in turn (Optuna wraps SQLAlchemy's errors, which wrap the driver's)."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def unreachable(error: BaseException) -> StorageUnreachable | None:
    """The StorageUnreachable behind `error`, if any, for the one-line report. Optuna's optimize loop hides it when
    it meets it while finishing a trial: its cleanup then fails with an UnboundLocalError, whose context holds it."""
    return next((e for e in _chain(error) if isinstance(e, StorageUnreachable)), None)


def transient(error: BaseException) -> bool:
    """True for a lost or refused connection, a server shutting down or starting up, or a deadlock: an error that
    the same call may not meet again."""
    return any(isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
               or isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated for e in _chain(error))


def reason(error: BaseException) -> str:
    """The first line of the driver's own message (not Optuna's wrapper's, nor SQLAlchemy's decoration)."""
    shown = error
    for e in _chain(error):
        if isinstance(e, sqlalchemy.exc.SQLAlchemyError):
            shown = e.orig if isinstance(e, sqlalchemy.exc.DBAPIError) and e.orig is not None else e
            break
    return first_line(shown)


def stored_as(trial, state, values) -> bool:
    """True if the FrozenTrial `trial` is stored in `state` with `values` (any, if None): a retried write that finds
    it so was stored by the attempt whose answer was lost."""
    return trial.state == state and (values is None or trial.values == list(values))


class Outage:
    """Retries a storage's calls while it is unreachable. One outage is shared by the threads using the storage
    (a worker and its heartbeat): one line when it starts, one when it ends, one deadline. After giving up, later
    calls get a single attempt each, so a worker that is stopping does not wait again at every call."""

    def __init__(self, where: str, seconds: float | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 is_transient: Callable[[BaseException], bool] = transient):
        self.where, self.seconds = where, RETRY_SECONDS if seconds is None else seconds
        self._sleep, self._clock = sleep, clock
        self._transient = is_transient  # the errors worth retrying: a database's by default, a proxy's for gRPC
        self._lock = threading.Lock()
        self._inside = threading.local()  # a retried call that makes other calls retries as a whole
        self.started: float | None = None  # when the current outage was first met
        self.recovered: float | None = None  # when the last outage ended
        self.gave_up = False

    def call(self, attempt: Callable[[bool], T]) -> T:
        """`attempt(again)` until it succeeds, raises a non-transient error, or the outage outlasts the retry
        period (StorageUnreachable). `again` is True after an attempt failed, which may have been committed."""
        if getattr(self._inside, "active", False):
            return attempt(False)
        self._inside.active = True
        try:
            return self._retry(attempt)
        finally:
            self._inside.active = False

    def _retry(self, attempt: Callable[[bool], T]) -> T:
        again, delay = False, FIRST_DELAY
        while True:
            try:
                result = attempt(again)
            except Exception as e:  # noqa: BLE001 - only the transient ones are retried; the rest go on up
                if not self._transient(e):
                    raise
                wait = self._failed(e, delay)
                if wait is None:
                    raise StorageUnreachable(f"storage {self.where} unreachable for {self.seconds:.0f} s, giving "
                                             f"up: {reason(e)}") from e
                self._sleep(wait)
                again, delay = True, min(delay * 2, MAX_DELAY)
                continue
            self._succeeded()
            return result

    def _failed(self, error: BaseException, delay: float) -> float | None:
        """Notes a failed attempt; how long to wait before the next, or None to give up."""
        now = self._clock()
        with self._lock:
            if self.started is None:
                self.started = now
                LOGGER.warning(f"storage unreachable, retrying for up to {self.seconds:.0f} s: {reason(error)}")
            if self.gave_up:
                return None
            left = self.started + self.seconds - now
            if left <= 0:
                self.gave_up = True
                LOGGER.warning(f"storage still unreachable after {self.seconds:.0f} s: giving up")
                return None
            return min(delay, left)

    def _succeeded(self) -> None:
        if self.started is None and not self.gave_up:
            return
        with self._lock:
            if self.started is not None:
                LOGGER.warning(f"storage reachable again after {self._clock() - self.started:.0f} s")
            self.started, self.gave_up = None, False
            self.recovered = self._clock()

    def recovered_within(self, seconds: float) -> bool:
        """True during an outage, and for `seconds` after one ended."""
        with self._lock:
            if self.started is not None:
                return True
            return self.recovered is not None and self._clock() - self.recovered < seconds
