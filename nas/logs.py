"""Progress lines on stdout through the `logging` module: one logger, "nas", with a worker's tag before each line."""
from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("nas")


class _CurrentStdout(logging.StreamHandler):
    """A stream handler that writes to whatever `sys.stdout` is when a line is logged (tests and callers swap it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _) -> None:
        pass


def configure(quiet: bool, tag: str = "") -> None:
    """Lines go to stdout, prefixed with `tag` (e.g. "[w1] "); `quiet` drops them."""
    handler = _CurrentStdout()
    handler.setFormatter(logging.Formatter(tag.replace("%", "%%") + "%(message)s"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)
    LOGGER.propagate = False


def line(text: str) -> None:
    LOGGER.info(text)


def trial_line(number: int, text: str) -> None:
    LOGGER.info("trial %4d  %s", number, text)


configure(quiet=False)  # lines show unless a run asks for quiet
