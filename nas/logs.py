"""Progress lines on stdout through the `logging` module: one logger, "nas", with a worker's tag before each line.
A --jobs worker process hands its lines to the parent (`forward_to`), which prints them: one process writes the
terminal, so its progress bar (nas.engine.progress) stays whole."""
from __future__ import annotations

import logging
import logging.handlers
import sys

from tqdm import tqdm

LOGGER = logging.getLogger("nas")
_forward = None  # in a worker process: the queue its lines go to


class _CurrentStdout(logging.Handler):
    """Writes to whatever `sys.stdout` is when a line is logged (tests and callers swap it), around any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging's own rule: a line that cannot be written never stops the work
            self.handleError(record)


def forward_to(queue) -> None:
    """In a worker process: lines go to `queue`, for the parent's `printing` to print."""
    global _forward
    _forward = queue


def printing(queue) -> logging.handlers.QueueListener:
    """In the parent: prints the lines workers put on `queue`, already tagged; start() it, and stop() it to flush."""
    handler = _CurrentStdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return logging.handlers.QueueListener(queue, handler)


def configure(quiet: bool, tag: str = "") -> None:
    """Lines go to stdout (or the parent, in a worker), prefixed with `tag` (e.g. "[w1] "); `quiet` drops them."""
    handler = logging.handlers.QueueHandler(_forward) if _forward is not None else _CurrentStdout()
    handler.setFormatter(logging.Formatter(tag.replace("%", "%%") + "%(message)s"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)
    LOGGER.propagate = False


def line(text: str) -> None:
    LOGGER.info(text)


def trial_line(number: int, text: str) -> None:
    LOGGER.info("trial %4d  %s", number, text)


configure(quiet=False)  # lines show unless a run asks for quiet
