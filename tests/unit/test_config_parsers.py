"""``supervisor.config`` validation, key by key: each bound, each reason word for word, the message format.

Fast (no subprocess; scripts/mutation.sh runs these); the CLI's one-line errors are tested in tests/test_config*.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisor import config
from supervisor.config import MetricsSettings, Settings, load_settings, resolve_paths, resolve_sqlite_url
from supervisor.errors import ConfigError


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "collector.ini"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def refused(tmp_path: Path, section: str, key: str, raw: str, reason: str) -> None:
    path = tmp_path / "collector.ini"
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, f"[{section}]\n{key} = {raw}\n")
    assert str(raised.value) == f"{path}: invalid {section}.{key} = {raw!r}: {reason}"


#: key: (smallest accepted, largest accepted, below the smallest, its reason, above the largest, its reason)
NUMBERS = {
    "poll_interval": ("0.1", "3600", "0.09", "must be at least 0.1 and at most 3600", "3600.5",
                      "must be at least 0.1 and at most 3600"),
    "concurrency": ("1", "1000", "0", "must be at least 1 and at most 1000", "1001",
                    "must be at least 1 and at most 1000"),
    "collection_interval": ("1", "86400", "0.5", "must be at least 1 and at most 86400", "86401",
                            "must be at least 1 and at most 86400"),
    "collection_timeout": ("0.1", "300", "0.05", "must be at least 0.1 and at most 300", "301",
                           "must be at least 0.1 and at most 300"),
    "login_timeout": ("0.1", "300", "0", "must be at least 0.1 and at most 300", "300.1",
                      "must be at least 0.1 and at most 300"),
    "shutdown_timeout": ("0.1", "3600", "-1", "must be at least 0.1 and at most 3600", "3601",
                         "must be at least 0.1 and at most 3600"),
    "heartbeat_timeout": ("5.1", "86400", "0.01", "must be at least 0.1 and at most 86400", "86400.5",
                          "must be at least 0.1 and at most 86400"),
    "max_child_rss_mb": ("16", "1048576", "15", "must be at least 16 and at most 1048576", "1048577",
                         "must be at least 16 and at most 1048576"),
    "retention_days": ("0", "36500", "-1", "must be at least 0 and at most 36500", "36501",
                       "must be at least 0 and at most 36500"),
    "server_refresh_interval": ("0.1", "3600", "0.0999", "must be at least 0.1 and at most 3600", "3600.01",
                                "must be at least 0.1 and at most 3600"),
    "max_sample_gap": ("1", "2592000", "0.9", "must be at least 1 and at most 2592000", "2592001",
                       "must be at least 1 and at most 2592000"),
    "lease_duration": ("1", "3600", "0.5", "must be at least 1 and at most 3600", "3601",
                       "must be at least 1 and at most 3600"),
}
INTEGER_KEYS = {"concurrency", "max_child_rss_mb", "retention_days"}


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_every_number_key_takes_its_bounds_and_refuses_just_beyond(tmp_path: Path, key: str) -> None:
    low, high, below, below_reason, above, above_reason = NUMBERS[key]
    kind = int if key in INTEGER_KEYS else float
    other = "heartbeat_timeout = 86400\n" if key == "collection_timeout" else ""  # stays above the timeout
    for raw in (low, high, f" {high} "):
        value = getattr(load(tmp_path, f"[collector]\n{other}{key} = {raw}\n"), key)
        assert value == kind(raw) and type(value) is kind, (key, raw, value)
    refused(tmp_path, "collector", key, below, below_reason)
    refused(tmp_path, "collector", key, above, above_reason)
    for raw in ("nan", "inf", "-inf"):
        reason = "expected an integer" if kind is int else "expected a finite number"
        refused(tmp_path, "collector", key, raw, reason)
    refused(tmp_path, "collector", key, "soon", "expected an integer" if kind is int else "expected a number")
    if kind is int:
        refused(tmp_path, "collector", key, "2.5", "expected an integer")
        # More digits than int() converts: out of range, not "expected an integer".
        with pytest.raises(ConfigError, match=f"characters\\): {re.escape(above_reason)}$"):
            load(tmp_path, f"[collector]\n{key} = {'9' * 5000}\n")


def test_number_parsers_directly() -> None:
    assert config._number(float, 1)("1e9") == 1e9  # no maximum: only the minimum
    with pytest.raises(ValueError, match=r"^must be at least 1$"):
        config._number(float, 1)("0.99")
    with pytest.raises(ValueError, match=r"^must be at least 2 and at most 3$"):
        config._number(int, 2, 3)("4")
    with pytest.raises(ValueError, match=r"^must be greater than 0$"):
        config._positive(float)("0")
    assert config._positive(float)("0.000001") == 0.000001  # no least: anything above 0
    with pytest.raises(ValueError, match=r"^must be at least 0$"):
        config._positive(float)("-0.5")
    with pytest.raises(ValueError, match=r"^must be greater than 0$"):
        config._positive(int, 10)("0")
    with pytest.raises(ValueError, match=r"^must be at least 1 and at most 10$"):
        config._positive(int, 10, 1)("0")
    assert config._positive(int, 10, 1)("10") == 10
    assert config.SHORTEST == 0.1


@pytest.mark.parametrize(
    ("key", "raw", "value"),
    [
        ("encrypt", " Strict ", "strict"), ("encrypt", "NO", "no"), ("encrypt", "optional", "optional"),
        ("collection_mode", "ADHOC", "adhoc"), ("collection_mode", "procedure", "procedure"),
    ],
)
def test_choices_are_case_insensitive(tmp_path: Path, key: str, raw: str, value: str) -> None:
    assert getattr(load(tmp_path, f"[collector]\n{key} = {raw}\n"), key) == value


def test_choice_reasons_list_the_options(tmp_path: Path) -> None:
    refused(tmp_path, "collector", "encrypt", "maybe", "expected one of yes, no, optional, strict")
    refused(tmp_path, "collector", "collection_mode", "fast", "expected one of auto, procedure, adhoc")
    refused(tmp_path, "logging", "level", "LOUD", "expected one of debug, info, warning, error, critical")
    refused(tmp_path, "logging", "format", "xml", "expected one of json, text")
    assert load(tmp_path, "[logging]\nlevel = warning\nformat = TEXT\n").logging.level == "WARNING"
    assert load(tmp_path, "[logging]\nformat = TEXT\n").logging.format == "text"
    assert config._choice(("A", "B"), upper=True)(" b ") == "B"
    assert config._choice(("a", "b"))(" B ") == "b"
    with pytest.raises(ValueError, match=r"^expected one of a, b$"):
        config._choice(("A", "B"), upper=True)("c")


@pytest.mark.parametrize("key", ["trust_server_certificate", "keep_connections"])
def test_booleans(tmp_path: Path, key: str) -> None:
    for raw in ("yes", "true", "on", "1", " YES ", "True", "ON"):
        assert getattr(load(tmp_path, f"[collector]\n{key} = {raw}\n"), key) is True, raw
    for raw in ("no", "false", "off", "0", "NO", "False", "OFF"):
        assert getattr(load(tmp_path, f"[collector]\n{key} = {raw}\n"), key) is False, raw
    for raw in ("2", "y", "perhaps", "00"):
        refused(tmp_path, "collector", key, raw, "expected yes or no")


def test_text_keys(tmp_path: Path) -> None:
    assert load(tmp_path, "[collector]\nodbc_driver =  FreeTDS \n").odbc_driver == "FreeTDS"
    for key in ("odbc_driver", "secret_key_file", "spool_dir"):
        path = tmp_path / "collector.ini"
        with pytest.raises(ConfigError) as raised:
            load(tmp_path, f"[collector]\n{key} =\n")
        assert str(raised.value) == f"{path}: invalid collector.{key} = '': must not be empty"
    path = tmp_path / "collector.ini"
    path.write_text("[collector]\nodbc_driver = Free\x07TDS\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"invalid collector.odbc_driver = 'Free\\x07TDS': must not contain control "
                                          r"characters$"):  # fmt: skip
        load_settings(path)
    with pytest.raises(ValueError, match=r"^must not be empty$"):
        config._text("   ")


def test_database_urls(tmp_path: Path) -> None:
    settings = load(tmp_path, "[collector]\nsystem_db = sqlite:///sys.db\ntenant_db_url = sqlite:///t/{slug}.db\n")
    assert settings.system_db == f"sqlite:///{tmp_path}/sys.db"
    assert settings.tenant_db_url == f"sqlite:///{tmp_path}/t/{{slug}}.db"
    refused(tmp_path, "collector", "tenant_db_url", "sqlite:///t.db", "must contain {slug}")
    refused(tmp_path, "collector", "tenant_db_url", "sqlite:///t/{SLUG}.db", "must contain {slug}")
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, "[collector]\nsystem_db = mysql://monitor:hunter2@db/system\n")
    assert "hunter2" not in str(raised.value) and "***" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, "[collector]\nsystem_db = sqlite://\n")
    assert str(raised.value).startswith(f"{tmp_path / 'collector.ini'}: invalid collector.system_db = 'sqlite://': ")
    # the check of a template fills {slug} in: a template whose filled-in URL is unusable is refused
    with pytest.raises(ConfigError, match=r"invalid collector\.tenant_db_url"):
        load(tmp_path, "[collector]\ntenant_db_url = sqlite://{slug}\n")
    config.check_database_url("sqlite:////abs/slug.db")
    with pytest.raises(ValueError):
        config.check_database_url("sqlite:///:memory:")  # in memory: no two processes share it


def test_masked_shows_a_url_as_written_unless_it_has_a_password() -> None:
    assert config._masked("sqlite:///x.db") == "sqlite:///x.db"
    assert config._masked("postgresql://u@h/db") == "postgresql://u@h/db"
    masked = config._masked("postgresql://u:secret@h/db")
    assert "secret" not in masked and "***" in masked
    assert "hunter" not in config._masked("postgresql://u:hunter@h/db?sslmode=require")


def test_metrics_listen(tmp_path: Path) -> None:
    for raw, address in (("127.0.0.1:9478", ("127.0.0.1", 9478)), ("[::1]:0", ("::1", 0)),
                         ("0.0.0.0:65535", ("0.0.0.0", 65535)), ("host:1", ("host", 1))):  # fmt: skip
        metrics = load(tmp_path, f"[metrics]\nlisten = {raw}\n").metrics
        assert metrics.listen == raw and metrics.address() == address
    assert load(tmp_path, "[metrics]\nlisten =\n").metrics.address() is None
    assert MetricsSettings().address() == ("127.0.0.1", 9478) and MetricsSettings(listen="").address() is None
    reason = "expected host:port (port 0-65535), or nothing to serve no metrics"
    for raw in ("9478", ":9478", "host:", "host:65536", "host:-1", "host:x1", "[::1]"):
        refused(tmp_path, "metrics", "listen", raw, reason)
    for raw in ("my host:80", "ho\x01st:80"):
        refused(tmp_path, "metrics", "listen", raw, "the host must not contain spaces or control characters")
    assert load(tmp_path, "[metrics]\nper_server = yes\n").metrics.per_server is True


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ini"
    with pytest.raises(ConfigError, match=f"^configuration file not found: {re.escape(str(missing))}$"):
        load_settings(missing)
    path = tmp_path / "collector.ini"
    for text, message in (
        ("[collector]\nconcurrency\n", "cannot parse: Source contains parsing errors: '" + str(path) + "' "
                                       "[line  2]: 'concurrency\\n'"),  # the line, named
        ("concurrency = 1\n", "cannot parse: File contains no section headers. file: '" + str(path) + "', "
                               "line: 1 'concurrency = 1\\n'"),
        ("[collector]\n[collector]\n", "cannot parse: While reading from '" + str(path) + "' [line  2]: section "
                                       "'collector' already exists"),
        ("[collecter]\n", "unknown section [collecter]"),
        ("[collector]\ncolour = blue\n", "unknown key collector.colour"),
        ("[DEFAULT]\nconcurrency = 1\n", "unknown section [DEFAULT]"),  # no DEFAULT section magic
    ):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as raised:
            load_settings(path)
        assert str(raised.value) == f"{path}: {message}", text
    path.write_bytes(b"[collector]\nodbc_driver = caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value).startswith(f"{path}: cannot parse: 'utf-8' codec can't decode byte 0xe9")
    path.write_text("[collector]\nodbc_driver = café\n", encoding="utf-8")
    assert load_settings(path).odbc_driver == "café"


def test_heartbeat_timeout_must_exceed_collection_timeout(tmp_path: Path) -> None:
    path = tmp_path / "collector.ini"
    message = (f"{path}: invalid collector.heartbeat_timeout = 5: must be greater than collector.collection_timeout "
               "(5)")  # fmt: skip
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load(tmp_path, "[collector]\nheartbeat_timeout = 5\n")
    assert load(tmp_path, "[collector]\nheartbeat_timeout = 5.1\n").heartbeat_timeout == 5.1
    with pytest.raises(ConfigError, match=re.escape("heartbeat_timeout = 10: must be greater than collector."
                                                    "collection_timeout (20)")):  # fmt: skip
        load(tmp_path, "[collector]\ncollection_timeout = 20\nheartbeat_timeout = 10\n")


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    base = tmp_path / "etc"
    resolved = resolve_paths(Settings(spool_dir="spool", secret_key_file="/abs/key"), base)
    assert resolved.spool_dir == str(base / "spool") and resolved.secret_key_file == "/abs/key"
    assert resolved.system_db == f"sqlite:///{base}/var/system.db"
    assert resolved.logging.file == "-"  # stderr stays stderr
    with_file = resolve_paths(Settings(logging=config.LoggingSettings(file="log/c.log")), base)
    assert with_file.logging.file == str(base / "log" / "c.log")
    home = resolve_paths(Settings(spool_dir="~/spool"), base).spool_dir
    assert home == str(Path("~/spool").expanduser())
    assert resolve_sqlite_url("sqlite:///x.db", base) == f"sqlite:///{base}/x.db"
    assert resolve_sqlite_url("sqlite:////abs/x.db", base) == "sqlite:////abs/x.db"
    assert resolve_sqlite_url("sqlite:///:memory:", base) == "sqlite:///:memory:"
    assert resolve_sqlite_url("sqlite:///", base) == "sqlite:///"
    assert resolve_sqlite_url("sqlite://", base) == "sqlite://"
    assert resolve_sqlite_url("postgresql://h/db", base) == "postgresql://h/db"
    assert resolve_sqlite_url("sqlite:///a/memory.db", base) == f"sqlite:///{base}/a/memory.db"


def test_number_reasons_from_a_fresh_parser() -> None:
    """The key table is built at import; a parser made here runs the same code afresh."""
    with pytest.raises(ValueError, match=r"^expected an integer$"):
        config._number(int, 0)("x")
    with pytest.raises(ValueError, match=r"^expected a number$"):
        config._number(float, 0)("x")
    for text in ("nan", "inf", "-inf"):
        with pytest.raises(ValueError, match=r"^expected a finite number$"):
            config._number(float, 0)(text)
    with pytest.raises(ValueError, match=r"^expected a finite number$"):
        config._positive(float, 10)("nan")


def test_the_database_url_reason_is_the_checks(tmp_path: Path) -> None:
    from supervisor.storage.engine import url_problem

    problem = url_problem("sqlite://", persistent=True)
    assert problem
    refused(tmp_path, "collector", "system_db", "sqlite://", problem)
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        config.check_database_url("sqlite://")


def test_values_are_read_verbatim_and_only_urls_are_masked(tmp_path: Path) -> None:
    settings = load(tmp_path, "[collector]\nsecret_key_file = /keys/%h-100%.key\n")  # no interpolation
    assert settings.secret_key_file == "/keys/%h-100%.key"
    refused(tmp_path, "collector", "concurrency", "x://u:pw@h/db", "expected an integer")  # not a URL key: as written
    assert load(tmp_path, "[metrics]\nlisten = hostX:80\n").metrics.address() == ("hostX", 80)
    assert load(tmp_path, "[metrics]\nlisten = [X::1]:80\n").metrics.address() == ("X::1", 80)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite:////var/t/acme\x00.db", "contains a control character"),
        ("postgresql+psycopg://u@h/acme\n", "contains a control character"),
        ("sqlite:///file:/var/t/acme.db?uri=true", "SQLite URI filename"),
        ("sqlite:///file:acme?mode=memory&uri=true", "in-memory"),
        ("sqlite:////var/t/acme.db?mode=ro", "a SQLite URL takes no options (?mode)"),  # it was ignored, with a warning
    ],
    ids=["nul", "newline", "sqlite-uri", "sqlite-uri-in-memory", "sqlite-options"],
)
def test_database_urls_the_engine_could_not_keep_safe(url: str, reason: str) -> None:
    """A NUL would end the path in the driver; a URI filename would bypass the child's check that its file was
    not deleted or replaced (writes to an unlinked file vanish)."""
    from supervisor.storage.engine import url_problem

    assert reason in (url_problem(url, persistent=True) or "")


def test_messages_name_the_tenant_db_as_configured_not_as_opened(tmp_path: Path) -> None:
    """A child opens its SQLite file as a read-write URI; its errors show the URL the user wrote."""
    from supervisor.errors import CollectorError
    from supervisor.storage.engine import make_engine, shown_engine_url
    from supervisor.storage.migrations import upgrade_tenant

    path = tmp_path / "acme.db"
    path.touch()
    engine = make_engine(f"sqlite:///{path}", must_exist=True)
    assert shown_engine_url(engine) == f"sqlite:///{path}"
    with pytest.raises(CollectorError) as raised:
        upgrade_tenant(engine, create=False)
    assert f"tenant DB sqlite:///{path} has no collector schema" in str(raised.value)
    engine.dispose()
