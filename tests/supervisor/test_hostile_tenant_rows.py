"""``tenants`` rows the product's web app writes (SQLite stores anything in any column), through the real command line
and real supervisors: a bad date or a blob costs at most its own row, two tenants never share one DB (nor the system
DB), a relative SQLite ``db_url`` means the config file's folder, and a tenant moved to another DB is followed."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers.cli import CLI
from tests.helpers.deployment import Deployment, SupervisorProcess
from tests.helpers.waiting import wait_until

NOW = "2026-01-01 00:00:00"


def _insert(deployment: Deployment, *rows: tuple[Any, ...]) -> None:
    """Rows as another program writes them: (slug, name, status, db_url, created_at, updated_at), any types."""
    db = sqlite3.connect(deployment.root / "var" / "system.db")
    db.executemany(
        "INSERT INTO tenants (slug, name, status, db_url, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)", rows
    )
    db.commit()
    db.close()


def _update(deployment: Deployment, statement: str, *params: Any) -> None:
    db = sqlite3.connect(deployment.root / "var" / "system.db")
    db.execute(statement, params)
    db.commit()
    db.close()


def _system_tables(deployment: Deployment) -> set[str]:
    db = sqlite3.connect(deployment.root / "var" / "system.db")
    try:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def _cli(deployment: Deployment, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI from ``cwd`` (default: a folder of its own, never the repository)."""
    folder = cwd or deployment.root / "elsewhere"
    folder.mkdir(exist_ok=True)
    return subprocess.run(
        [*CLI, "-c", str(deployment.config), *args], cwd=folder, capture_output=True, text=True,
        env=deployment.env(), timeout=60,
    )  # fmt: skip


def _no_internal_error(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2), result


def _stop(supervisor: SupervisorProcess) -> None:
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_bad_dates_and_blobs_cost_at_most_their_own_row(deployment: Deployment) -> None:
    """Dates are never read (a ``'bogus'`` or epoch ``created_at`` runs); a blob slug is its row's ``tenant.invalid``;
    a blob name or status is shown; every listing command lists the rows, none fails with an internal error."""
    deployment.add_tenant("good")
    _insert(
        deployment,
        ("baddate", "x", "active", None, "bogus", "bogus"),
        ("epoch", "x", "active", None, 1767225600, 1767225600),
        (b"ab", "x", "active", None, NOW, NOW),
        ("blobname", b"\x00\xff", "active", None, NOW, NOW),
        ("blobstatus", "x", b"\x00", None, NOW, NOW),
    )
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=4)
    time.sleep(1.5)  # a few polls (poll_interval 0.5 s): the invalid row is logged once, not per poll
    assert set(supervisor.running_children()) == {"good", "baddate", "epoch", "blobname"}
    [invalid] = supervisor.events("tenant.invalid")
    assert invalid["error_class"] == "config" and "b'ab'" in invalid["error"]

    listed = _cli(deployment, "tenant", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["slug"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"good", "baddate", "epoch", "b'ab'", "blobname", "blobstatus"}
    assert rows["blobname"]["name"] == repr(b"\x00\xff") and rows["blobstatus"]["status"] == repr(b"\x00")
    assert rows["b'ab'"]["problem"] and rows["good"]["problem"] is None
    assert "b'ab'" in listed.stderr  # named on stderr too
    status = _cli(deployment, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert {t["slug"] for t in json.loads(status.stdout)["tenants"]} == set(rows)
    for command in (("tenant", "list"), ("status",), ("server", "list"), ("init-db",)):
        result = _cli(deployment, *command)
        _no_internal_error(result)
        assert "b'ab'" in result.stdout + result.stderr, command
    assert _cli(deployment, "tenant", "suspend", "baddate").returncode == 0
    first_password = subprocess.run(  # the first password makes the key: the bad row's DB is not looked into
        [*CLI, "-c", str(deployment.config), "server", "add", "good", "s1", "--host", "h", "--user", "u",
         "--password-env", "PW"], capture_output=True, text=True, env={**deployment.env(), "PW": "pw"}, timeout=60,
    )  # fmt: skip
    assert first_password.returncode == 0, first_password.stderr
    supervisor.wait_event("child.exited", tenant="baddate")
    assert set(supervisor.running_children()) == {"good", "epoch", "blobname"}
    _stop(supervisor)


def test_two_rows_never_share_a_db_nor_use_the_system_db(deployment: Deployment) -> None:
    """A row naming another tenant's DB (spelt differently: through a symlink) or the system DB is
    ``tenant.invalid``; the tenant already running keeps its DB even when the other row has the lower id."""
    deployment.add_tenant("good")
    deployment.add_tenant("early", "--suspended")  # id 2, lower than the incumbent's below
    deployment.add_tenant("incumbent", "--db-url", f"sqlite:///{deployment.root}/shared.db")  # id 3
    (deployment.root / "link").symlink_to(deployment.root / "var")
    tables = _system_tables(deployment)
    _insert(
        deployment,
        ("twin", "x", "active", f"sqlite:///{deployment.root}/link/../var/tenants/good.db", NOW, NOW),
        ("sysdb", "x", "active", f"sqlite:///{deployment.root}/link/system.db", NOW, NOW),
    )
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", count=2)
    supervisor.wait_event("tenant.invalid", count=2)
    _update(deployment, "UPDATE tenants SET status = 'active', db_url = ? WHERE slug = 'early'",
            f"sqlite:///{deployment.root}/shared.db")  # fmt: skip
    supervisor.wait_event("tenant.invalid", count=3)
    time.sleep(1.5)  # a few polls: nothing else starts
    invalid = {e["message"].split("(")[1].split(")")[0]: e["error"] for e in supervisor.events("tenant.invalid")}
    assert set(invalid) == {"twin", "sysdb", "early"}
    assert "also the DB of tenant good" in invalid["twin"] and "also the DB of tenant incumbent" in invalid["early"]
    assert "is the system DB" in invalid["sysdb"]
    assert set(supervisor.running_children()) == {"good", "incumbent"}
    assert _system_tables(deployment) == tables  # no tenant schema written into the system DB
    init = _cli(deployment, "init-db")
    assert init.returncode == 1, init
    left_alone = [line for line in init.stderr.splitlines() if "DB left alone" in line]
    assert len(left_alone) == 3 and all("tenant.invalid" not in line for line in left_alone), init.stderr
    assert _system_tables(deployment) == tables
    # A running tenant's row changed to the DB another running child uses: that child keeps it, though the
    # changed row has the lower id (before, both stopped: the incumbent lost its DB, good's child refused it).
    incumbent = supervisor.running_children()["incumbent"]
    _update(deployment, "UPDATE tenants SET db_url = ? WHERE slug = 'good'", f"sqlite:///{deployment.root}/shared.db")
    supervisor.wait_event("tenant.invalid", count=4)
    time.sleep(1.5)
    [moved] = [e for e in supervisor.events("tenant.invalid") if "(good)" in e["message"]]
    assert "also the DB of tenant incumbent" in moved["error"], moved
    running = supervisor.running_children()
    assert running.get("incumbent") == incumbent and "good" not in running, running
    _stop(supervisor)


def test_tenant_add_refuses_a_db_that_is_taken(deployment: Deployment) -> None:
    """The system DB, another tenant's DB (also spelt as a relative path), or the DB ``tenant_db_url`` would give
    the new slug: exit 2, one line, nothing registered."""
    deployment.add_tenant("acme")
    deployment.add_tenant("owner", "--db-url", f"sqlite:///{deployment.root}/var/tenants/newcomer.db")
    attempts = [
        ("sysdb", "--db-url", f"sqlite:///{deployment.root}/var/system.db"),
        ("twin", "--db-url", f"sqlite:///{deployment.root}/var/tenants/acme.db"),
        ("twin", "--db-url", "sqlite:///var/tenants/acme.db"),
        ("newcomer",),
    ]
    for slug, *extra in attempts:
        result = _cli(deployment, "tenant", "add", slug, *extra)
        assert result.returncode == 2, (slug, extra, result)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "system DB" in result.stderr or "DB of tenant" in result.stderr, result.stderr
    listed = json.loads(_cli(deployment, "tenant", "list", "--json").stdout)
    assert sorted(row["slug"] for row in listed) == ["acme", "owner"]
    assert "servers" not in _system_tables(deployment)


def test_a_copy_of_another_tenants_db_is_refused_and_init_db_adopts_an_orphan(deployment: Deployment) -> None:
    """A tenant DB names its tenant (``schema_info`` ``owner_tenant_id``): ``tenant add`` refuses a copy of another
    tenant's DB (another file, so the URL check cannot tell); ``init-db`` adopts a DB stamped for a tenant id the
    system DB no longer has (a recreated system DB)."""
    deployment.add_tenant("acme")
    shutil.copy(deployment.root / "var" / "tenants" / "acme.db", deployment.root / "copy.db")
    result = _cli(deployment, "tenant", "add", "twin", "--db-url", f"sqlite:///{deployment.root}/copy.db")
    assert result.returncode == 2 and "belongs to tenant id 1" in result.stderr, result
    assert len(result.stderr.strip().splitlines()) == 1
    _update(deployment, "UPDATE tenants SET id = 7 WHERE slug = 'acme'")  # as if the system DB were made anew
    adopted = _cli(deployment, "init-db")
    assert adopted.returncode == 0, adopted
    db = sqlite3.connect(deployment.root / "var" / "tenants" / "acme.db")
    try:
        assert db.execute("SELECT version FROM schema_info WHERE name = 'owner_tenant_id'").fetchone() == (7,)
    finally:
        db.close()


def test_relative_sqlite_db_url_means_the_config_folder(deployment: Deployment) -> None:
    """``tenant add --db-url sqlite:///rel`` from any folder stores the absolute path in the config's folder; a row
    the web app wrote with a relative path is read there by every command, from any folder."""
    added = _cli(deployment, "tenant", "add", "rel", "--db-url", "sqlite:///tenants/rel.db")
    assert added.returncode == 0, added.stderr
    stored = sqlite3.connect(deployment.root / "var" / "system.db").execute("SELECT db_url FROM tenants").fetchone()
    assert stored == (f"sqlite:///{deployment.root}/tenants/rel.db",)
    assert (deployment.root / "tenants" / "rel.db").is_file()
    _insert(deployment, ("web", "x", "active", "sqlite:///tenants/web.db", NOW, NOW))
    other = deployment.root / "other"
    assert _cli(deployment, "init-db", cwd=other).returncode == 0
    assert (deployment.root / "tenants" / "web.db").is_file() and not list(other.rglob("*.db"))
    added = _cli(deployment, "server", "add", "web", "s1", "--host", "127.0.0.1", cwd=other)
    assert added.returncode == 0, added.stderr
    status = json.loads(_cli(deployment, "status", "--json").stdout)  # from yet another folder
    assert {t["slug"]: t["servers_total"] for t in status["tenants"]} == {"rel": 0, "web": 1}
    listed = json.loads(_cli(deployment, "tenant", "list", "--json").stdout)
    assert {row["slug"]: row["db_url"] for row in listed}["web"] == f"sqlite:///{deployment.root}/tenants/web.db"


def test_status_skips_snapshot_times_that_are_no_times(deployment: Deployment) -> None:
    deployment.add_tenant("acme")
    deployment.cli("server", "add", "acme", "s1", "--host", "h")
    db = sqlite3.connect(deployment.root / "var" / "tenants" / "acme.db")
    fresh = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 60))
    db.executemany("INSERT INTO metric_snapshots (server_id, collected_at) VALUES (1, ?)",
                   [("bogus",), (5,), (b"\x00",), (fresh,)])  # fmt: skip
    db.commit()
    db.close()
    result = _cli(deployment, "status", "--json")
    assert result.returncode == 0, result.stderr
    [tenant] = json.loads(result.stdout)["tenants"]
    assert 50 <= tenant["newest_snapshot_age_s"] <= 120
    text = _cli(deployment, "status")
    assert text.returncode == 0 and "acme" in text.stdout, text.stderr


def test_a_tenant_moved_to_another_db_is_restarted_on_it(tmp_path: Path) -> None:
    """The web app changes an active tenant's ``db_url``: its child is stopped and started on the new DB (the real
    runtime: a DB without the collector's schema is what the new child reports)."""
    deployment = Deployment(tmp_path, fake_runtime=False)
    deployment.write_config(server_refresh_interval=0.5)
    deployment.add_tenant("acme", "--db-url", f"sqlite:///{tmp_path}/old.db")
    supervisor = deployment.start()
    try:
        supervisor.wait_event("tenant.started")
        new = tmp_path / "moved" / "new.db"
        _update(deployment, "UPDATE tenants SET db_url = ? WHERE slug = 'acme'", f"sqlite:///{new}")
        [changed] = supervisor.wait_event("tenant.changed")
        assert "old.db" in changed["message"] and "new.db" in changed["message"]
        supervisor.wait_event("child.started", count=2)
        wait_until(
            lambda: any("new.db" in e["message"] for e in supervisor.events("child.db_unavailable")), 20,
            "the new child to open new.db",
        )  # fmt: skip
        assert [e["reason"] for e in supervisor.events("child.exited")] == ["tenant's DB or slug changed"]
        assert [e["delay_s"] for e in supervisor.events("child.restarting")] == [0.0]  # no crash backoff
        assert not new.exists()  # a child never creates a DB
        _stop(supervisor)
    finally:
        deployment.stop_all()


def test_a_renamed_tenant_runs_under_its_new_slug(deployment: Deployment) -> None:
    deployment.add_tenant("acme", "--db-url", f"sqlite:///{deployment.root}/acme.db")
    supervisor = deployment.start()
    supervisor.wait_event("fake.started", tenant="acme")
    _update(deployment, "UPDATE tenants SET slug = 'renamed' WHERE slug = 'acme'")
    [changed] = supervisor.wait_event("tenant.changed")
    assert changed["change"] == "slug acme -> renamed"
    supervisor.wait_event("fake.started", tenant="renamed")
    assert supervisor.running_children().keys() == {"renamed"}
    _stop(supervisor)


def test_a_deleted_tenant_row_stops_its_child_and_nothing_else(deployment: Deployment) -> None:
    """The web app deletes a tenant's row (its lease and children rows go with it, ON DELETE CASCADE): its child is
    stopped at the next poll; the polls go on (they used to fail for ever on the children row of the deleted tenant,
    and after the lease ran out every tenant's child was fenced)."""
    for slug in ("keep", "gone"):
        deployment.add_tenant(slug)
    supervisor = deployment.start()
    for slug in ("keep", "gone"):
        supervisor.wait_event("fake.started", tenant=slug)
    db = sqlite3.connect(deployment.root / "var" / "system.db")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("DELETE FROM tenants WHERE slug = 'gone'")
    db.commit()
    db.close()
    supervisor.wait_event("child.exited", tenant="gone")
    time.sleep(4 * 0.5)  # four polls more
    assert supervisor.events("system_db.unavailable") == [] and supervisor.events("lease.expiring") == []
    assert supervisor.running_children().keys() == {"keep"}
    status = json.loads(_cli(deployment, "status", "--json").stdout)
    assert [t["slug"] for t in status["tenants"]] == ["keep"]
    _stop(supervisor)


def test_invalid_utf8_in_a_tenant_row_costs_that_row_only(deployment: Deployment) -> None:
    """SQLite stores any bytes as TEXT: a ``name`` and a ``slug`` in invalid UTF-8. The one with a bad name runs
    (the name is only shown), the bad slug is that row's ``tenant.invalid``, the others run, and the commands
    list every row (a row that did not decode used to fail every poll, ``status`` and ``tenant list``)."""
    deployment.add_tenant("plain")
    deployment.add_tenant("badname")
    _update(deployment, "UPDATE tenants SET name = CAST(X'4163FF6D65' AS TEXT) WHERE slug = 'badname'")
    _insert(deployment, (b"bad\xffslug".decode("latin-1"), "x", "active", None, NOW, NOW))
    _update(deployment, "UPDATE tenants SET slug = CAST(X'626164FF736C7567' AS TEXT) WHERE name = 'x'")
    supervisor = deployment.start()
    for slug in ("plain", "badname"):
        supervisor.wait_event("fake.started", tenant=slug)
    [invalid] = supervisor.wait_event("tenant.invalid")
    assert "slug" in invalid["error"], invalid
    assert supervisor.events("system_db.unavailable") == []
    listed = _cli(deployment, "tenant", "list", "--json")
    _no_internal_error(listed)
    assert listed.returncode == 0 and {t["name"] for t in json.loads(listed.stdout)} >= {"Ac\ufffdme", "x"}
    status = _cli(deployment, "status", "--json")
    assert status.returncode == 0 and len(json.loads(status.stdout)["tenants"]) == 3, status
    _stop(supervisor)
