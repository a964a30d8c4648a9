"""Exceptions that carry an exit code and a one-line message for the user."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CollectorError(Exception):
    """An expected failure: shown to the user as one line, no traceback."""

    exit_code = EXIT_FAILURE


class UsageError(CollectorError):
    """Bad argument, unknown tenant or server, invalid value: exit 2."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """Invalid configuration file or value: exit 2."""
