"""``procedures --print --grants`` (what the monitoring login needs, per flavour) and ``procedures deploy`` where
the procedure cannot be created (it says so, and that collections do not need it), through the real CLI."""

from __future__ import annotations

import re
from pathlib import Path

from supervisor.procedures import permissions
from supervisor.procedures.catalog import FLAVOUR_TITLES, VIEWS
from supervisor.procedures.selects import VIEWS_READ
from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment


def test_grants_per_flavour(tmp_path: Path) -> None:
    (tmp_path / "collector.ini").write_text("[collector]\n")
    printed = run_cli("-c", str(tmp_path / "collector.ini"), "procedures", "--print", "--grants", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    text = printed.stdout
    assert text == permissions.grants_script()
    for title in FLAVOUR_TITLES.values():
        assert title in text
    for statement in ("GRANT VIEW SERVER STATE TO collector_monitor;",
                      "GRANT VIEW SERVER PERFORMANCE STATE TO collector_monitor;",
                      "GRANT VIEW DATABASE STATE TO collector_monitor;",
                      "ALTER SERVER ROLE ##MS_ServerStateReader## ADD MEMBER collector_monitor;",
                      "GRANT EXECUTE ON OBJECT::collector.usp_collect_snapshot TO collector_monitor;"):  # fmt: skip
        assert statement in text, statement
    for views in VIEWS_READ.values():  # every view a flavour reads is named with the permission it needs
        assert all(name in text and name in VIEWS for name in views)
    # What is not a comment is a statement to run as it stands.
    statements = "\n".join(line for line in text.splitlines() if line and not line.startswith("--"))
    assert all(re.match(r"(USE|CREATE (LOGIN|USER)|GRANT) .+;$", line) for line in statements.splitlines())
    assert len(re.findall(r"^GRANT ", statements, re.MULTILINE)) == 4


def test_deploy_says_where_the_ad_hoc_batch_must_be_used(
    tmp_path: Path, driver: str, sqlite_url: str, simulator
) -> None:
    sim = simulator([{"name": "no-ddl", "grants": ["VIEW SERVER STATE"], "procedure_installed": False}])
    deployment = TenantDeployment(tmp_path, driver, sqlite_url)
    deployment.add("no-ddl", sim.ports["no-ddl"])
    config = str(deployment.config)
    refused = run_cli("-c", config, "procedures", "deploy", "acme", "no-ddl", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "CREATE SCHEMA permission denied in database 'master'" in refused.stderr
    assert permissions.DEPLOY_REFUSED_HINT in refused.stderr
    collected = run_cli("-c", config, "collect-once", "acme", "no-ddl", cwd=tmp_path)  # auto: the ad-hoc batch
    assert collected.returncode == 0, collected.stderr
