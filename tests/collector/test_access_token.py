"""Access tokens for ``auth = entra-token``: read from a command's output (cached until shortly before the token
expires) or from a file (re-read when it changes), with real processes and files."""

from __future__ import annotations

import base64
import json
import struct
import sys
import time
from pathlib import Path

import pytest

from supervisor.children.access_token import (
    REFRESH_MARGIN_SECONDS,
    SQL_COPT_SS_ACCESS_TOKEN,
    TokenCache,
    attrs_before,
    jwt_expiry,
    parse_token_text,
)
from supervisor.children.connection_string import Endpoint
from supervisor.children.errors import CollectionFailure
from supervisor.logs import redact


def jwt(exp: float | None, subject: str = "monitor@contoso") -> str:
    def part(document: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    claims = {"sub": subject, **({"exp": int(exp)} if exp is not None else {})}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def command_endpoint(command: str) -> Endpoint:
    return Endpoint("h", 1433, None, None, "no", False, auth="entra-token", token_command=command)


def token_script(tmp_path: Path, output: str, *, exit_code: int = 0, sleep: float = 0.0) -> str:
    """A command printing ``output`` and counting its runs in ``runs.txt``."""
    script = tmp_path / "token.py"
    script.write_text(
        "import sys, time\n"
        f"open({str(tmp_path / 'runs.txt')!r}, 'a').write('x')\n"
        f"time.sleep({sleep})\n"
        f"sys.stdout.write({output!r})\n"
        "sys.stderr.write('AADSTS700016: application not found\\n')\n"
        f"sys.exit({exit_code})\n"
    )
    return f"{sys.executable} {script}"


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs.txt"
    return len(path.read_text()) if path.exists() else 0


def test_jwt_expiry() -> None:
    assert jwt_expiry(jwt(1_900_000_000)) == 1_900_000_000
    assert jwt_expiry(jwt(None)) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None


def test_token_text_plain_and_json() -> None:
    token = jwt(time.time() + 3600)
    assert parse_token_text(f"{token}\n", "x").value == token
    az = json.dumps({"accessToken": token, "expiresOn": "2030-01-01 00:00:00.000000", "expires_on": 1_893_456_000})
    parsed = parse_token_text(az, "x")
    assert parsed.value == token and parsed.expires_at == jwt_expiry(token)
    opaque = parse_token_text(json.dumps({"access_token": "opaque-token", "expires_on": "1893456000"}), "x")
    assert (opaque.value, opaque.expires_at) == ("opaque-token", 1_893_456_000)
    for junk in ("", "   \n", "two words", '{"token_type": "Bearer"}', "{not json"):
        with pytest.raises(CollectionFailure) as failed:
            parse_token_text(junk, "token command az")
        assert failed.value.error_class == "login" and "token command az" in failed.value.message


def test_tokens_are_secrets() -> None:
    token = jwt(time.time() + 3600, subject="secret-subject")
    parse_token_text(token, "x")
    assert token not in redact(f"login with {token} failed")


def test_command_token_is_cached_until_it_nearly_expires(tmp_path: Path) -> None:
    cache = TokenCache()
    token = jwt(time.time() + 3600)
    endpoint = command_endpoint(token_script(tmp_path, token))
    assert cache.token(endpoint, time.monotonic() + 10) == token
    assert cache.token(endpoint, time.monotonic() + 10) == token
    assert runs(tmp_path) == 1
    cache.forget(endpoint.token_command or "")
    assert cache.token(endpoint, time.monotonic() + 10) == token
    assert runs(tmp_path) == 2


def test_command_token_close_to_expiry_is_fetched_again(tmp_path: Path) -> None:
    cache = TokenCache()
    endpoint = command_endpoint(token_script(tmp_path, jwt(time.time() + REFRESH_MARGIN_SECONDS / 2)))
    cache.token(endpoint, time.monotonic() + 10)
    cache.token(endpoint, time.monotonic() + 10)
    assert runs(tmp_path) == 2


@pytest.mark.parametrize(
    ("kind", "error_class", "fragment"),
    [
        ("fails", "login", "failed with exit code 3: AADSTS700016"),
        ("slow", "login", "did not finish"),
        ("missing", "config", "cannot run token command /nonexistent/az"),
        ("empty", "login", "gave no access token"),
    ],
)
def test_command_failures(tmp_path: Path, kind: str, error_class: str, fragment: str) -> None:
    command = {
        "fails": lambda: token_script(tmp_path, "", exit_code=3),
        "slow": lambda: token_script(tmp_path, jwt(None), sleep=5),
        "missing": lambda: "/nonexistent/az account get-access-token",
        "empty": lambda: token_script(tmp_path, "\n"),
    }[kind]()
    started = time.monotonic()
    with pytest.raises(CollectionFailure) as failed:
        TokenCache().token(command_endpoint(command), time.monotonic() + 1.0)
    assert (failed.value.error_class, failed.value.phase) == (error_class, "connect")
    assert fragment in failed.value.message
    assert time.monotonic() - started < 3  # the command gets what the collection has left, no more


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    cache = TokenCache()
    path = tmp_path / "token.jwt"
    endpoint = Endpoint("h", 1433, None, None, "no", False, auth="entra-token", token_file=str(path))
    with pytest.raises(CollectionFailure) as missing:
        cache.token(endpoint, time.monotonic() + 1)
    assert missing.value.error_class == "config" and str(path) in missing.value.message
    first, second = jwt(time.time() + 600, "a"), jwt(time.time() + 600, "bb")
    path.write_text(first + "\n")
    assert cache.token(endpoint, time.monotonic() + 1) == first
    path.write_text(second)
    assert cache.token(endpoint, time.monotonic() + 1) == second


def test_attrs_before_layout() -> None:
    (key, value), = attrs_before("abc").items()
    assert key == SQL_COPT_SS_ACCESS_TOKEN == 1256
    assert value == struct.pack("<I", 6) + "abc".encode("utf-16-le")
