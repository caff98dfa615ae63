"""Errors a person can act on: the CLI prints them as one line and exits non-zero; the web
app answers them with their `status` and the one error body {"error", "detail"}."""


class HotlineError(Exception):
    """A failure with a message meant for the operator, never a traceback. Over HTTP it is
    the caller's mistake (400) unless a subclass says otherwise; the message names the field
    or the thing refused."""

    exit_code = 1
    status = 400


class NotFound(HotlineError):
    status = 404


class ConfigError(HotlineError):
    """A wrong or missing setting; the message names the key."""

    exit_code = 2
    status = 500
