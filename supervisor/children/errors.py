"""Classifying collection failures (``error_class``, README "Status and logs") from pyodbc errors."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyodbc

from supervisor.errors import CONFIG, CONNECT, INTERNAL, LOGIN, PERMISSION, PROTOCOL, TIMEOUT
from supervisor.logs import redact
from supervisor.procedures.permissions import with_permission_hint
from supervisor.rules import printable

#: Classes that mean "we never got a working session": the server is offline.
UNREACHABLE = frozenset({CONNECT, LOGIN, CONFIG})

LOGIN_FAILED_NUMBERS = frozenset({18456, 18452, 18470, 18486, 18487, 18488, 4060})
PERMISSION_NUMBERS = frozenset({300, 297, 229, 262, 15247})
MISSING_PROCEDURE_NUMBER = 2812
TIMEOUT_STATES = frozenset({"HYT00", "HYT01", "HY008"})
CONNECT_STATES = frozenset({"08001", "08S01", "08004", "08007", "01000", "IM002", "IM003", "IM004"})
TLS_HINTS = ("ssl", "tls", "certificate", "encryption")

_NATIVE_NUMBER = re.compile(r"\((\d{2,6})\)")
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")
#: pyodbc's text when the driver failed a call without a diagnostic record (a DONE token with its error bit
#: and no ERROR token; Driver 18 on a PRELOGIN answer it cannot use).
_NO_DIAGNOSTIC = "The driver did not supply an error!"
NO_MESSAGE = "the server reported an error without a message"
_MAX_TEXT = 500


class CollectionFailure(Exception):
    """A classified failure of one collection; ``message`` is already redacted."""

    def __init__(self, error_class: str, message: str, *, phase: str = "query", native: int | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.phase = phase
        self.native = native


@dataclass(frozen=True)
class DriverError:
    sqlstate: str
    numbers: tuple[int, ...]
    text: str


def parse_driver_error(exc: BaseException) -> DriverError:
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        sqlstate, text = args[0], args[1]
        if _SQLSTATE.fullmatch(text) and not _SQLSTATE.fullmatch(sqlstate):
            sqlstate, text = text, sqlstate  # pyodbc's own errors (a type it cannot read) are (text, SQLSTATE)
    else:
        sqlstate, text = "", str(exc)
    if _NO_DIAGNOSTIC in text:
        text = NO_MESSAGE
    numbers = tuple(int(n) for n in _NATIVE_NUMBER.findall(text))
    return DriverError(sqlstate, numbers, clean_text(text))


def clean_text(text: str) -> str:
    """Driver text without vendor prefixes' noise, one line, control characters escaped, redacted, bounded."""
    line = printable(" ".join(text.split()))
    line = redact(line)
    return line if len(line) <= _MAX_TEXT else line[: _MAX_TEXT - 1] + "…"


def classify(exc: BaseException, *, phase: str) -> CollectionFailure:
    """``phase`` is ``connect`` (login not yet done) or ``query``."""
    if isinstance(exc, CollectionFailure):
        return exc
    if isinstance(exc, UnicodeDecodeError):  # pyodbc decoding the server's text
        return CollectionFailure(PROTOCOL, "server sent invalid UTF-16", phase=phase)
    if not isinstance(exc, pyodbc.Error):
        return CollectionFailure(INTERNAL, clean_text(f"{type(exc).__name__}: {exc}"), phase=phase)
    error = parse_driver_error(exc)
    native = error.numbers[0] if error.numbers else None
    error_class = _error_class(error, phase)
    text = with_permission_hint(error.text) if error_class == PERMISSION else error.text
    return CollectionFailure(error_class, text, phase=phase, native=native)


def _error_class(error: DriverError, phase: str) -> str:
    numbers = set(error.numbers)
    if numbers & LOGIN_FAILED_NUMBERS or error.sqlstate == "28000":
        return LOGIN
    if numbers & PERMISSION_NUMBERS:
        return PERMISSION if phase == "query" else LOGIN
    if phase == "connect":
        # Whatever stops the login (refused, unreachable, login timeout, TLS) leaves the server unusable.
        return CONNECT
    if error.sqlstate in TIMEOUT_STATES:
        return TIMEOUT
    if error.sqlstate.startswith("08"):
        return CONNECT
    if error.sqlstate.startswith("42") and error.numbers:
        return PROTOCOL
    return PROTOCOL


def has_number(exc: BaseException, number: int) -> bool:
    return isinstance(exc, pyodbc.Error) and number in parse_driver_error(exc).numbers
