"""Errors caused by the input or the environment: the command line prints their message as one line and exits 2."""


class UserError(Exception):
    """Bad input or an unusable environment; the message says what and how to fix it. Anything else is a bug."""


class CliError(UserError):
    """A bad flag value, caught before any work starts."""


class SearchError(UserError):
    """The search cannot start or go on as asked: a device, a folder or a budget that does not work."""


class StudyError(UserError):
    """The storage or the study cannot be used as asked."""
