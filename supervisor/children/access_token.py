"""Entra ID (Azure AD) access tokens for servers with ``auth = entra-token``.

The token comes from a command the child runs (``token_command``: its standard output is the token, or a JSON
object with ``accessToken`` / ``access_token``, as ``az account get-access-token`` prints) or from a file
(``token_file``, re-read whenever it changes). A command's token is kept until shortly before it expires (the
JWT's ``exp`` claim, else the JSON's ``expires_on``) and shared by every server with the same command. The
token is handed to Microsoft ODBC Driver 18 before it connects, as the connection attribute
``SQL_COPT_SS_ACCESS_TOKEN`` (a 4-byte little-endian length, then the token in UTF-16-LE); the driver then
sends it in LOGIN7's FEDAUTH feature extension. FreeTDS has no such attribute (``connection_string.build``
refuses the combination).

Failures: a command that cannot be started or a file that cannot be read is a ``config`` error; a command that
fails, times out or prints no token is a ``login`` error (the server cannot be logged in to). Whether a token
is expired or wrong is the server's to say (a ``login`` failure, error 18456). Tokens are registered as
secrets, so they are masked in every log line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

from supervisor.children.connection_string import Endpoint
from supervisor.children.errors import CollectionFailure, clean_text
from supervisor.errors import CONFIG, CONNECT, LOGIN
from supervisor.logs import register_secret

#: msodbcsql.h: the pre-connect attribute that carries an access token.
SQL_COPT_SS_ACCESS_TOKEN = 1256
#: A command's token is fetched again this long before it expires.
REFRESH_MARGIN_SECONDS = 120.0
#: How long a command's token is kept when its expiry cannot be read.
UNKNOWN_EXPIRY_SECONDS = 300.0
#: A command gets at most this long, and never more than the collection has left.
COMMAND_TIMEOUT_SECONDS = 30.0
_MAX_TOKEN = 64 * 1024
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9\-_.~+/=]+")


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float | None  # epoch seconds, None when unknown


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (epoch seconds), or None when the token is no JWT or has none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    return float(expiry) if isinstance(expiry, int | float) and not isinstance(expiry, bool) else None


def parse_token_text(text: str, source: str) -> AccessToken:
    """A token from a command's output or a file's content; raises CollectionFailure (login) naming ``source``."""
    stripped = text.strip()
    expires_at: float | None = None
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError:
            raise CollectionFailure(LOGIN, f"{source} printed JSON that cannot be read", phase=CONNECT) from None
        value = next(
            (document[key] for key in ("accessToken", "access_token", "token") if isinstance(document.get(key), str)),
            None,
        ) if isinstance(document, dict) else None
        if value is None:
            raise CollectionFailure(LOGIN, f"{source} printed JSON without accessToken", phase=CONNECT)
        stated = document.get("expires_on")
        if isinstance(stated, str) and stated.isdigit():
            stated = int(stated)
        if isinstance(stated, int | float) and not isinstance(stated, bool):
            expires_at = float(stated)
        stripped = value.strip()
    if not stripped:
        raise CollectionFailure(LOGIN, f"{source} gave no access token", phase=CONNECT)
    if len(stripped) > _MAX_TOKEN or not _TOKEN_TEXT.fullmatch(stripped):
        raise CollectionFailure(LOGIN, f"{source} gave something that is not an access token", phase=CONNECT)
    register_secret(stripped)
    return AccessToken(stripped, jwt_expiry(stripped) or expires_at)


class TokenCache:
    """Tokens of commands (until shortly before they expire) and of files (until the file changes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: dict[str, AccessToken] = {}
        self._command_locks: dict[str, threading.Lock] = {}
        self._files: dict[str, tuple[tuple[int, int, int], AccessToken]] = {}

    def token(self, endpoint: Endpoint, deadline: float) -> str:
        """The access token for ``endpoint``; ``deadline`` (time.monotonic()) bounds a command's run."""
        if endpoint.token_command:
            return self._from_command(endpoint.token_command, deadline)
        if endpoint.token_file:
            return self._from_file(endpoint.token_file)
        raise CollectionFailure(CONFIG, "auth entra-token without a token command or token file", phase=CONNECT)

    def forget(self, command: str) -> None:
        with self._lock:
            self._commands.pop(command, None)

    def _from_command(self, command: str, deadline: float) -> str:
        with self._lock:
            lock = self._command_locks.setdefault(command, threading.Lock())
        with lock:  # servers sharing a command run it once
            with self._lock:
                cached = self._commands.get(command)
            if cached is not None and _fresh(cached):
                return cached.value
            token = run_command(command, deadline)
            with self._lock:
                self._commands[command] = token
            return token.value

    def _from_file(self, path: str) -> str:
        try:
            status = os.stat(path)
            key = (status.st_mtime_ns, status.st_size, status.st_ino)
            with self._lock:
                cached = self._files.get(path)
            if cached is not None and cached[0] == key:
                return cached[1].value
            with open(path, encoding="utf-8") as handle:
                text = handle.read(_MAX_TOKEN + 1)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CollectionFailure(CONFIG, f"cannot read token file {path}: {reason}", phase=CONNECT) from None
        token = parse_token_text(text, f"token file {path}")
        with self._lock:
            self._files[path] = (key, token)
        return token.value


def _fresh(token: AccessToken, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if token.expires_at is None:
        return False
    return token.expires_at - REFRESH_MARGIN_SECONDS > now


def run_command(command: str, deadline: float) -> AccessToken:
    """Run ``command`` (split like a shell's words, no shell) and read the token it prints."""
    left = min(COMMAND_TIMEOUT_SECONDS, deadline - time.monotonic())
    if left <= 0:
        raise CollectionFailure(LOGIN, "no time left to run the token command", phase=CONNECT)
    words = shlex.split(command)
    try:
        done = subprocess.run(
            words, capture_output=True, stdin=subprocess.DEVNULL, timeout=left, check=False, text=True,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        message = f"token command {words[0]} did not finish in {left:.1f} s"
        raise CollectionFailure(LOGIN, message, phase=CONNECT) from None
    except OSError as exc:
        raise CollectionFailure(
            CONFIG, f"cannot run token command {words[0]}: {exc.strerror or exc}", phase=CONNECT
        ) from None
    if done.returncode != 0:
        detail = clean_text(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no message")
        raise CollectionFailure(
            LOGIN, f"token command {words[0]} failed with exit code {done.returncode}: {detail[:200]}", phase=CONNECT
        )
    token = parse_token_text(done.stdout, f"token command {words[0]}")
    if token.expires_at is None:
        token = AccessToken(token.value, time.time() + UNKNOWN_EXPIRY_SECONDS + REFRESH_MARGIN_SECONDS)
    return token


def attrs_before(token: str) -> dict[int, bytes]:
    """pyodbc's ``attrs_before`` carrying ``token`` as SQL_COPT_SS_ACCESS_TOKEN."""
    raw = token.encode("utf-16-le")
    return {SQL_COPT_SS_ACCESS_TOKEN: struct.pack("<I", len(raw)) + raw}


#: One cache per process (a child): servers with the same command share its token.
TOKENS = TokenCache()
