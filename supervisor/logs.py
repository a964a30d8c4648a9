"""Log formatting (README "Status and logs"): one JSON object per line, or a text line for humans.

Every line has ``timestamp`` (UTC), ``level``, ``logger``, ``message``, ``event`` and ``pid``;
``tenant``, ``server``, ``duration_ms``, ``error``, ``error_class`` come from ``extra=``.
Secrets registered with ``register_secret`` are replaced by ``***`` in every field.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import threading
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from supervisor.config import LoggingSettings
from supervisor.errors import ConfigError
from supervisor.log_writer import LogFile, NonBlockingLogHandler
from supervisor.log_writer import write_pending_logs as write_pending_logs  # for the parent's loop
from supervisor.rules import printable

DEFAULT_EVENT = "log"
_MASK = "***"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_CONNECTION_STRING_SECRET = re.compile(r"(?i)\b(PWD|PASSWORD)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)")


def register_secret(value: str | None) -> None:
    """Never print ``value`` in a log line from now on (passwords, keys)."""
    if value and len(value) >= 3:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    text = _CONNECTION_STRING_SECRET.sub(lambda m: f"{m.group(1)}={_MASK}", text)
    if _secrets:
        with _secrets_lock:
            secrets = sorted(_secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
    return text


def utc_timestamp(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ContractJsonFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", "process"],
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            reserved_attrs=[*_RESERVED_ATTRS, "event"],
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict) -> None:
        log_data["timestamp"] = utc_timestamp(record.created)
        super().add_fields(log_data, record, message_dict)
        log_data["event"] = getattr(record, "event", None) or DEFAULT_EVENT
        for key, value in list(log_data.items()):
            if isinstance(value, str):
                log_data[key] = redact(value)


class TextFormatter(logging.Formatter):
    _CONTEXT = ("tenant", "server", "duration_ms", "error_class", "error")

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or DEFAULT_EVENT
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in self._CONTEXT if getattr(record, key, None) is not None
        )
        line = f"{utc_timestamp(record.created)} {record.levelname:<7} {event} {record.getMessage()}"
        if context:
            line += f" [{context}]"
        line = printable(line)  # a server's error text must not move a terminal's cursor or colours under tail -f
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + "\n".join(printable(part) for part in record.exc_text.splitlines())
        return redact(line)


# LogRecord attributes that are not user fields (python-json-logger's default list plus taskName).
_RESERVED_ATTRS = (
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname",
    "levelno", "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process",
    "processName", "relativeCreated", "stack_info", "thread", "threadName", "taskName",
)  # fmt: skip


def make_formatter(settings: LoggingSettings) -> logging.Formatter:
    return ContractJsonFormatter() if settings.format == "json" else TextFormatter()


def open_log_file(settings: LoggingSettings, stream: TextIO | None = None) -> LogFile:
    if settings.file == "-" and stream is None and sys.stderr is None:
        raise ConfigError("logging.file = '-' (standard error), but standard error is closed: set logging.file to "
                          "a path, or start it with standard error open")  # fmt: skip
    try:
        return LogFile(None if settings.file == "-" else settings.file, stream)
    except OSError as exc:
        raise ConfigError(f"invalid logging.file = {settings.file!r}: cannot open it: {exc.strerror or exc}") from None


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger to one handler with the contract's format (``supervisor.log_writer``: never
    blocking the caller); returns that handler. The handler it replaces is closed."""
    handler = NonBlockingLogHandler(open_log_file(settings, stream))
    handler.setFormatter(make_formatter(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.level)
    quiet_libraries(settings.level)
    return handler


#: Libraries whose warnings repeat what an event of ours says already, in their own words: psycopg's "error ignored
#: terminating <psycopg.Pipeline …>: pipeline aborted" during a PostgreSQL outage (``writer.db_unavailable`` says
#: it). Shown at DEBUG.
QUIETED_LIBRARIES = ("psycopg",)


def quiet_libraries(level: str | int) -> None:
    quiet = logging.getLevelName(level) if isinstance(level, str) else level
    for name in QUIETED_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if quiet == logging.DEBUG else logging.ERROR)


def log_event(
    logger: logging.Logger,
    level: int,
    event: str,
    message: str,
    *args: object,
    **fields: object,
) -> None:
    """Log ``message % args`` as the contract's event ``event`` with ``fields`` as JSON fields."""
    if logger.isEnabledFor(level):
        logger.log(level, message, *args, extra={"event": event, **fields}, stacklevel=2)
