"""``server list`` across tenants and ``server show`` (text, JSON, PNG) through the real command line, against a
real supervisor collecting two tenants from the simulator with ``odbc_driver = auto`` (Driver 18 by the
library of mssql-python-odbc here, FreeTDS being the only registered driver), with one outage in the window."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import create_engine, select

from supervisor.storage.tenant_schema import metric_snapshots, servers
from tests.helpers.deployment import Deployment
from tests.helpers.simulator import SIM_PASSWORD, SIM_USER, Simulator
from tests.helpers.waiting import wait_until

FLEET = [
    {"name": "a-ok", "profile": {"user_connections": [40, 60], "batch_requests_per_sec": 500}},
    {"name": "a-down", "faults": {"down": True}},
    {"name": "b-ok"},
    {"name": "b-plain"},  # no TLS, registered with --encrypt yes: Driver 18 says so, with the hint
    {"name": "b-down", "faults": {"down": True}},
]


@dataclass
class Fleet:
    deployment: Deployment
    sim: Simulator
    root: Path

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = self.run(*args, env=env)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def run(self, *args: str, env: dict[str, str] | None = None):
        if env:
            os.environ.update(env)
        try:
            return self.deployment.cli(*args, check=False)
        finally:
            for key in env or {}:
                os.environ.pop(key, None)


def status_of(root: Path, tenant: str, name: str) -> str | None:
    engine = create_engine(f"sqlite:///{root}/var/tenants/{tenant}.db")
    try:
        with engine.connect() as conn:
            return conn.execute(select(servers.c.status).where(servers.c.name == name)).scalar()
    finally:
        engine.dispose()


def snapshot_count(root: Path, tenant: str, server: str | None = None) -> int:
    engine = create_engine(f"sqlite:///{root}/var/tenants/{tenant}.db")
    query = select(metric_snapshots.c.id)
    if server is not None:
        query = query.join(servers, servers.c.id == metric_snapshots.c.server_id).where(servers.c.name == server)
    try:
        with engine.connect() as conn:
            return len(conn.execute(query).all())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("views")
    sim = Simulator(root, FLEET)
    sim.start()
    deployment = Deployment(root, fake_runtime=False)
    deployment.write_config(
        odbc_driver="auto", encrypt="no", collection_interval=1, collection_timeout=2, login_timeout=1,
        server_refresh_interval=1,
    )  # fmt: skip
    try:
        for tenant in ("a", "b"):
            deployment.add_tenant(tenant)
        os.environ["VIEWS_PW"] = SIM_PASSWORD
        for entry in FLEET:
            name = entry["name"]
            encrypt = "yes" if name == "b-plain" else "no"
            deployment.cli(
                "server", "add", name[0], name, "--host", "127.0.0.1", "--port", str(sim.ports[name]),
                "--user", SIM_USER, "--password-env", "VIEWS_PW", "--encrypt", encrypt,
            )  # fmt: skip
        supervisor = deployment.start()
        view = Fleet(deployment, sim, root)
        wait_until(lambda: snapshot_count(root, "a") >= 6 and snapshot_count(root, "b") >= 6, 60, "snapshots")
        wait_until(lambda: status_of(root, "b", "b-plain") == "offline", 30, "b-plain offline")
        sim.set_faults("a-ok", down=True)  # an outage inside the window
        wait_until(lambda: status_of(root, "a", "a-ok") == "offline", 30, "a-ok offline")
        sim.set_faults("a-ok", down=False)
        wait_until(lambda: status_of(root, "a", "a-ok") == "online", 30, "a-ok online again")
        # server show charts a-ok's history in points of about 2 s: 8 of them need 16 stored snapshots.
        wait_until(lambda: snapshot_count(root, "a", "a-ok") >= 16, 60, "16 snapshots of a-ok")
        yield view
        supervisor.signal(15)
        assert supervisor.wait_exit(30) == 0
    finally:
        os.environ.pop("VIEWS_PW", None)
        deployment.stop_all()
        sim.stop()


def test_server_list_offline_across_tenants(fleet: Fleet) -> None:
    listed = fleet.ok("server", "list", "--status", "offline")
    header, *rows = listed.splitlines()
    assert header.split()[:2] == ["TENANT", "NAME"] and "CLASS" in header.split()
    assert sorted((row.split()[0], row.split()[1]) for row in rows) == [
        ("a", "a-down"),
        ("b", "b-down"),
        ("b", "b-plain"),
    ]
    assert all(len(row) <= 160 for row in rows)

    everything = json.loads(fleet.ok("server", "list", "--json"))
    assert {(s["tenant"], s["name"]) for s in everything} == {(e["name"][0], e["name"]) for e in FLEET}
    plain = next(s for s in everything if s["name"] == "b-plain")
    assert plain["last_error_class"] == "connect" and "Encryption not supported" in plain["last_error"]
    assert "--encrypt optional" in plain["hint"]
    down = next(s for s in everything if s["name"] == "a-down")
    assert down["status"] == "offline" and down["last_error_class"] and down["hint"] is None

    # Without --wide the error is cut at a word; with it, the whole text and the hint.
    short_row = next(r for r in rows if r.split()[1] == "b-plain")
    assert short_row.rstrip().endswith("…") and plain["last_error"] not in short_row
    wide = fleet.ok("server", "list", "b", "--status", "offline", "--wide")
    assert "TENANT" not in wide  # one tenant: no tenant column
    assert plain["last_error"] in wide and "--encrypt optional" in wide
    assert fleet.ok("server", "list", "a", "--status", "online").count("a-ok") == 1
    assert json.loads(fleet.ok("server", "list", "a", "--status", "unknown", "--json")) == []

    status = json.loads(fleet.ok("status", "--json"))
    for tenant in status["tenants"]:
        parts = [tenant[f"servers_{s}"] for s in ("online", "offline", "unknown", "disabled")]
        assert sum(parts) == tenant["servers_total"], tenant
    by_slug = {t["slug"]: t for t in status["tenants"]}
    assert (by_slug["a"]["servers_online"], by_slug["a"]["servers_offline"]) == (1, 1)
    assert (by_slug["b"]["servers_online"], by_slug["b"]["servers_offline"]) == (1, 2)


def test_server_show_text_and_json(fleet: Fleet) -> None:
    text = fleet.ok("server", "show", "a", "a-ok", "--since", "10m")
    lines = text.splitlines()
    assert lines[0].startswith("a / a-ok  127.0.0.1:") and " online " in lines[0]
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    for label in ("CPU %", "memory %", "connections", "batch requests/s"):
        assert any(line.startswith(label) and "min " in line and "max " in line for line in lines), label
    chart_rows = [line for line in lines if "┤" in line or "│" in line]
    assert len(chart_rows) == 4 * 4 and any(ch in "".join(chart_rows) for ch in "▁▂▃▄▅▆▇█")
    assert "top waits by time" in text and "status events (last 10m): 3" in text
    assert [line.split()[2] for line in lines if line.startswith("  20")] == ["online", "offline", "online"]

    data = json.loads(fleet.ok("server", "show", "a", "a-ok", "--since", "10m", "--json"))
    assert data["tenant"] == "a" and data["server"]["name"] == "a-ok" and "password" not in json.dumps(data)
    assert data["latest"]["age_s"] < 10 and 40 <= data["latest"]["connection_count"] <= 60
    series = data["series"]
    assert len(series) >= 8 and sum(p["samples"] for p in series) == data["window"]["snapshots"]
    assert all(40 <= p["connection_count"] <= 60 for p in series)
    assert all(p["batch_requests_per_sec"] is None or 300 < p["batch_requests_per_sec"] < 700 for p in series)
    assert [p["at"] for p in series] == sorted(p["at"] for p in series)
    stats = data["summary"]["connection_count"]
    assert 40 <= stats["min"] <= stats["avg"] <= stats["max"] <= 60
    assert data["top_waits"] and data["top_waits"][0]["wait_time_ms"] >= data["top_waits"][-1]["wait_time_ms"]
    assert [e["status"] for e in data["status_events"]] == ["online", "offline", "online"]

    down = json.loads(fleet.ok("server", "show", "a", "a-down", "--json"))
    assert down["latest"] is None and down["series"] == [] and down["server"]["status"] == "offline"
    assert "no snapshot stored yet" in fleet.ok("server", "show", "a", "a-down")

    for args, fragment in [
        (("server", "show", "a", "nope"), "unknown server 'nope'"),
        (("server", "show", "zz", "a-ok"), "unknown tenant 'zz'"),
        (("server", "show", "a", "a-ok", "--since", "soon"), "--since"),
    ]:
        result = fleet.run(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


def test_server_show_png(fleet: Fleet, tmp_path: Path) -> None:
    target = tmp_path / "a-ok.png"
    out = fleet.ok("server", "show", "a", "a-ok", "--since", "2m", "--png", str(target))
    assert f"charts written to {target}" in out
    with Image.open(target) as image:
        assert image.format == "PNG" and image.size == (1200, 1500)
        pixels = image.convert("RGB")
        assert pixels.getpixel((2, 2)) == (255, 255, 255)  # the background
        # The CPU line's colour in the top panel, the batch/s line's in the fourth: data was drawn.
        colours = {"cpu": (0x1F, 0x77, 0xB4), "batch": (0xFF, 0x7F, 0x0E)}
        panels = {"cpu": (0, 300), "batch": (820, 1140)}
        for name, (top, bottom) in panels.items():
            region = pixels.crop((0, top, 1200, bottom))
            hits = sum(
                1
                for p in region.get_flattened_data()
                if all(abs(a - b) <= 12 for a, b in zip(p, colours[name], strict=True))
            )
            assert hits > 150, (name, hits)
    if os.environ.get("KEEP_SHOW_PNG"):
        import shutil

        shutil.copy(target, os.environ["KEEP_SHOW_PNG"])
    target.unlink()

    stub = tmp_path / "no-matplotlib" / "matplotlib"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('matplotlib is not installed (test stub)')\n")
    missing = fleet.run("server", "show", "a", "a-ok", "--png", str(target), env={"PYTHONPATH": str(stub.parent)})
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "collector-supervisor[plot]" in missing.stderr and not target.exists()
