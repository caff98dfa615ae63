"""Errors a person can act on: the CLI prints them as one line and exits non-zero."""


class HotlineError(Exception):
    """A failure with a message meant for the operator, never a traceback."""

    exit_code = 1


class ConfigError(HotlineError):
    """A wrong or missing setting; the message names the key."""

    exit_code = 2
