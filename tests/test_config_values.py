"""Every config value is checked (issue 12): non-finite numbers, unusable database URLs and the rest are a
configuration error naming ``section.key`` and the value, one line and exit 2 through the real command line,
never a crash later."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import config
from supervisor.config import Settings, load_settings
from supervisor.errors import ConfigError
from tests.helpers.cli import run_cli

KEYS = [(section, key) for section, keys in config._SECTIONS.items() for key in keys]
NUMBER_KEYS = [
    key
    for key, default in vars(Settings()).items()
    if isinstance(default, int | float) and not isinstance(default, bool)
]
WORDS = st.sampled_from([
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-300", "0", "-0", "-1", "0.05", "1",
    "2.5", "86400", "86401", "1e9", "99999999999999999999", "9" * 5000, "", "yes", "no", "maybe", "json", "TEXT",
    "debug", "LOUD", "auto", "-", "/", "/dev/null", "a\x00b", "\x01", "{slug}", "sqlite:///x.db",
    "sqlite:///t/{slug}.db", "sqlite:///:memory:", "sqlite://", "mysql://u:pw@h/db", "nosuch://x",
    "postgresql+asyncpg://h/{slug}", "postgresql+psycopg://h/x_{slug}", "sqlite:///file:{slug}?mode=memory&uri=true",
])  # fmt: skip
VALUES = st.one_of(WORDS, st.text(max_size=40), st.floats().map(repr), st.integers().map(str))


PROPERTY = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(tmp_path: Path, section: str, key: str, value: str) -> Path:
    path = tmp_path / "collector.ini"
    path.write_text(f"[{section}]\n{key} = {value}\n", encoding="utf-8")
    return path


def check_loads_or_names_the_key(tmp_path: Path, section: str, key: str, value: str) -> None:
    path = write(tmp_path, section, key, value)
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        assert f"{section}.{key}" in message or "cannot parse" in message or "unknown" in message, message
        if key in ("system_db", "tenant_db_url"):
            assert "pw@" not in message  # a URL's password is masked
        return
    for name, field_value in vars(loaded).items():
        if isinstance(field_value, float):
            assert math.isfinite(field_value), (name, field_value)
    assert loaded.heartbeat_timeout > loaded.collection_timeout
    assert loaded.collection_interval >= 1 and loaded.poll_interval >= 0.1


@pytest.mark.parametrize(("section", "key"), KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_any_value_of_any_key_loads_or_is_a_config_error_naming_it(tmp_path: Path, section: str, key: str) -> None:
    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(VALUES)
    def check(value: str) -> None:
        check_loads_or_names_the_key(tmp_path, section, key, value)

    check()


def assert_one_line_exit_2(result: Any, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_non_finite_numbers_are_refused_by_the_cli(tmp_path: Path, key: str, value: str) -> None:
    """The issue: ``nan`` was accepted for every float key (exit 0), then every collection failed."""
    path = write(tmp_path, "collector", key, value)
    assert_one_line_exit_2(run_cli("-c", str(path), "status", cwd=tmp_path), f"collector.{key}", repr(value))


URLS = [
    ("system_db", "mysql://monitor:pw@db.example/system", ["collector.system_db", "MySQLdb", "not installed"]),
    ("system_db", "sqlite:///:memory:", ["collector.system_db", "'sqlite:///:memory:'", "in-memory"]),
    ("system_db", "sqlite://", ["collector.system_db", "in-memory"]),
    ("system_db", "postgresql+asyncpg://h/system", ["collector.system_db", "asyncpg"]),
    ("system_db", "nosuch://x", ["collector.system_db", "unsupported database type 'nosuch'"]),
    ("system_db", "not a url", ["collector.system_db", "not a database URL"]),
    ("tenant_db_url", "mysql://h/t_{slug}", ["collector.tenant_db_url", "MySQLdb"]),
    ("tenant_db_url", "sqlite:///file:{slug}?mode=memory&uri=true", ["collector.tenant_db_url", "in-memory"]),
]


@pytest.mark.parametrize(("key", "url", "fragments"), URLS, ids=[u for _, u, _ in URLS])
def test_unusable_database_urls_are_config_errors(tmp_path: Path, key: str, url: str, fragments: list[str]) -> None:
    """The issue: ``mysql://`` gave ``internal error: ModuleNotFoundError`` (exit 1), ``sqlite:///:memory:`` gave
    ``no such table: tenants``."""
    path = write(tmp_path, "collector", key, url)
    for command in (["status"], ["init-db"], ["tenant", "list"]):
        result = run_cli("-c", str(path), *command, cwd=tmp_path)
        assert_one_line_exit_2(result, *fragments)
        assert "pw@" not in result.stderr


def test_a_log_file_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "collector.ini"
    path.write_text(f"[collector]\nsystem_db = sqlite:///{tmp_path}/s.db\n[logging]\nfile = {tmp_path}/logs\n")
    result = run_cli("-c", str(path), "run", cwd=tmp_path, timeout=60)
    assert_one_line_exit_2(result, "logging.file", "cannot open")


def test_the_shipped_and_a_valid_config_still_load(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "collector.ini"
    assert load_settings(shipped).collection_interval == 30
    path = write(tmp_path, "collector", "tenant_db_url", "postgresql+psycopg://u:pw@h/t_{slug}")
    assert load_settings(path).tenant_url("a", None) == "postgresql+psycopg://u:pw@h/t_a"
    assert os.path.isabs(load_settings(write(tmp_path, "collector", "system_db", "sqlite:///v/s.db")).system_db[10:])
