"""Errors caused by the input or the environment: the command line prints their message as one line and exits with
their `exit_code`, 2 unless said otherwise."""


class UserError(Exception):
    """Bad input or an unusable environment; the message says what and how to fix it. Anything else is a bug."""

    exit_code = 2


class CliError(UserError):
    """A bad flag value, caught before any work starts."""


class SearchError(UserError):
    """The search cannot start or go on as asked: a device, a folder or a budget that does not work."""


class SearchFailed(UserError):
    """The search ran but could not do its job: repeated errors, a worker that failed, or no trial completed. The
    reports are written first, from the finished trials."""

    exit_code = 3


class StorageError(UserError):
    """The storage or the study cannot be used as asked."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (its type's name if it has none), for a one-line error."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
