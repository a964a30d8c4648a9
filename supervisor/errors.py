"""Exceptions that carry an exit code and a one-line message for the user; the log's error classes."""

from __future__ import annotations

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


# The ``error_class`` of a log line, a stored failure or a metric (README "Logs and events").
CONNECT = "connect"
LOGIN = "login"
TIMEOUT = "timeout"
PERMISSION = "permission"
PROTOCOL = "protocol"
STORAGE = "storage"
CONFIG = "config"
INTERNAL = "internal"
