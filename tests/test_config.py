"""collector.ini loading: defaults, path resolution, and one-line errors naming section.key."""

from __future__ import annotations

import configparser
import dataclasses
from dataclasses import replace
from pathlib import Path

import pytest

from supervisor.config import LoggingSettings, MetricsSettings, Settings, load_settings, resolve_paths
from supervisor.errors import ConfigError
from tests.helpers.cli import run_cli

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.ini"
    path.write_text(text)
    return path


def test_shipped_collector_ini_documents_every_key_and_loads_to_the_defaults(tmp_path: Path) -> None:
    shipped = REPO / "collector.ini"
    settings = load_settings(shipped)
    # Every key, not a chosen few: the shipped file is Settings() with its paths resolved against its folder.
    defaults = resolve_paths(Settings(), shipped.resolve().parent)
    for key in (f.name for f in dataclasses.fields(Settings) if f.name != "config_path"):
        assert getattr(settings, key) == getattr(defaults, key), key
    assert replace(settings, config_path=None) == defaults
    assert settings.config_path == str(shipped.resolve())

    lines = shipped.read_text().splitlines()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(shipped.read_text())
    collector_keys = {f.name for f in dataclasses.fields(Settings)} - {"logging", "metrics", "config_path"}
    assert set(parser["collector"]) == collector_keys  # every key is in the file, not left to its default
    assert set(parser["logging"]) == {f.name for f in dataclasses.fields(LoggingSettings)}
    assert set(parser["metrics"]) == {f.name for f in dataclasses.fields(MetricsSettings)}
    for section in parser.sections():
        for key in parser[section]:
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
            assert lines[index - 1].startswith("#"), f"{section}.{key} has no comment above it"


def test_contract_defaults_and_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[collector]\n"))
    assert settings.system_db == f"sqlite:///{tmp_path}/var/system.db"
    assert settings.tenant_url("acme", None) == f"sqlite:///{tmp_path}/var/tenants/acme.db"
    assert settings.tenant_url("acme", "postgresql://x/y") == "postgresql://x/y"
    assert settings.secret_key_file == str(tmp_path / "var" / "secret.key")
    assert (settings.poll_interval, settings.concurrency, settings.collection_interval) == (10, 10, 30)
    assert (settings.collection_timeout, settings.login_timeout, settings.shutdown_timeout) == (5, 3, 20)
    assert (settings.encrypt, settings.trust_server_certificate, settings.keep_connections) == ("yes", False, True)
    assert (settings.heartbeat_timeout, settings.max_child_rss_mb, settings.retention_days) == (60, 512, 30)
    assert settings.logging.format == "json" and settings.logging.file == "-"


def test_absolute_and_server_urls_are_kept(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            "[collector]\nsystem_db = sqlite:////abs/sys.db\ntenant_db_url = postgresql://h/t_{slug}\n"
            "[logging]\nfile = logs/c.log\nlevel = debug\nformat = TEXT\n",
        )
    )
    assert settings.system_db == "sqlite:////abs/sys.db"
    assert settings.tenant_db_url == "postgresql://h/t_{slug}"
    assert settings.logging.file == str(tmp_path / "logs" / "c.log")
    assert (settings.logging.level, settings.logging.format) == ("DEBUG", "text")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[collector]\nconcurrency = 0\n", ["collector.concurrency", "'0'", "at least 1"]),
        ("[collector]\ncollection_timeout = -1\n", ["collector.collection_timeout", "'-1'"]),
        ("[collector]\npoll_interval = soon\n", ["collector.poll_interval", "'soon'", "number"]),
        ("[collector]\nconcurrency = 2.5\n", ["collector.concurrency", "integer"]),
        ("[collector]\nencrypt = maybe\n", ["collector.encrypt", "'maybe'", "yes, no, optional, strict"]),
        ("[collector]\nkeep_connections = perhaps\n", ["collector.keep_connections", "yes or no"]),
        ("[collector]\ncolour = blue\n", ["unknown key collector.colour"]),
        ("[collecter]\nconcurrency = 1\n", ["unknown section [collecter]"]),
        ("[logging]\nlevel = LOUD\n", ["logging.level", "'LOUD'"]),
        ("[collector]\ntenant_db_url = sqlite:///x.db\n", ["collector.tenant_db_url", "{slug}"]),
        ("[collector]\nheartbeat_timeout = 5\n", ["collector.heartbeat_timeout", "collection_timeout"]),
        ("[collector]\nconcurrency\n", ["cannot parse"]),
        ("concurrency = 1\n", ["cannot parse"]),
    ],
)
def test_invalid_values_name_the_key_and_value(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_config_errors_through_the_cli_exit_2_with_one_line(tmp_path: Path) -> None:
    write(tmp_path, "[collector]\nconcurrency = 0\n")
    result = run_cli("-c", "collector.ini", "tenant", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "collector.concurrency" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()

    missing = run_cli("-c", "nowhere.ini", "init-db", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("configuration file not found: nowhere.ini")
    assert missing.stderr.count("\n") == 1


def test_a_bom_is_read_and_parse_errors_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "collector.ini"
    path.write_bytes(b"\xef\xbb\xbf[collector]\nconcurrency = 4\n")  # as Notepad writes UTF-8
    assert load_settings(path).concurrency == 4
    path.write_text("[collector]\npoll_interval = 5\nconcurrency 4\n")
    with pytest.raises(ConfigError, match=r"\[line  3\]: 'concurrency 4") as caught:
        load_settings(path)
    assert "\n" not in str(caught.value)


def test_a_path_that_is_no_file_or_too_big_and_a_huge_value_get_short_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_settings(tmp_path)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_settings("/dev/zero")
    huge = write(tmp_path, "[collector]\nsystem_db = sqlite:///x.db\nconcurrency = " + "9" * 200_000 + "\n")
    with pytest.raises(ConfigError, match=r"collector\.concurrency") as caught:
        load_settings(huge)
    assert len(str(caught.value)) < 300
    huge.write_text("[collector]\n" + "; padding\n" * 200_000)
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_settings(huge)
