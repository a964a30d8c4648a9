"""``init-config [PATH]``: the commented sample collector.ini shipped inside the package, the same file as the
repository's; it refuses to overwrite; what it writes runs as is."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from supervisor.config import Settings, load_settings
from tests.cli.conftest import assert_one_line_error
from tests.helpers.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_packaged_sample_is_the_repositorys_collector_ini() -> None:
    packaged = resources.files("supervisor").joinpath("collector.ini").read_bytes()
    assert packaged == (REPO / "collector.ini").read_bytes()
    assert "supervisor = collector.ini" in (REPO / "setup.cfg").read_text()  # package_data: installed too


def test_init_config_writes_the_sample_and_refuses_to_overwrite(tmp_path: Path) -> None:
    written = run_cli("init-config", cwd=tmp_path)  # no PATH: the -c default, ./collector.ini
    assert written.returncode == 0, written.stderr
    target = tmp_path / "collector.ini"
    assert target.read_bytes() == (REPO / "collector.ini").read_bytes()
    assert str(target.name) in written.stdout and "init-db" in written.stdout
    defaults = Settings()
    loaded = load_settings(target)
    assert (loaded.poll_interval, loaded.collection_timeout, loaded.odbc_driver) == (
        defaults.poll_interval, defaults.collection_timeout, defaults.odbc_driver,
    )  # fmt: skip

    target.write_text("# mine\n")
    again = run_cli("init-config", cwd=tmp_path)
    assert_one_line_error(again, "collector.ini already exists", "not overwritten")
    assert target.read_text() == "# mine\n"

    folder = tmp_path / "etc"
    folder.mkdir()
    into_folder = run_cli("init-config", str(folder), cwd=tmp_path)
    assert into_folder.returncode == 0 and (folder / "collector.ini").is_file()
    named = run_cli("-c", str(tmp_path / "other.ini"), "init-config", cwd=tmp_path)
    assert named.returncode == 0 and (tmp_path / "other.ini").is_file()

    # What it wrote is usable as it stands: the next command of the README works with it.
    ready = run_cli("-c", str(folder / "collector.ini"), "init-db", cwd=tmp_path)
    assert ready.returncode == 0, ready.stderr
    assert (folder / "var" / "system.db").is_file()

    missing = run_cli("init-config", str(tmp_path / "no" / "such" / "dir" / "c.ini"), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "cannot write" in missing.stderr
