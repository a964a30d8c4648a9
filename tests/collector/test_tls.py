"""The default ``encrypt = yes`` path against a simulated server that speaks TDS 7.x TLS."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli
from tests.helpers.deployment import TenantDeployment


def test_encrypted_collection(tmp_path: Path, driver: str, sqlite_url: str, simulator) -> None:
    sim = simulator([{"name": "tls", "tls": True}])
    deployment = TenantDeployment(tmp_path, driver, sqlite_url, encrypt="yes")
    deployment.add("trusting", sim.ports["tls"], trust_server_certificate=True)
    deployment.add("verifying", sim.ports["tls"])
    config = str(deployment.config)

    trusted = run_cli("-c", config, "collect-once", "acme", "trusting", "--json", cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["server"] == "trusting"

    verified = run_cli("-c", config, "collect-once", "acme", "verifying", cwd=tmp_path)
    if driver == "msodbc18":
        # A self-signed certificate is refused unless trusted: one line that says why.
        assert verified.returncode == 1
        assert verified.stderr.count("\n") == 1
        assert "verifying" in verified.stderr and "certificate" in verified.stderr.lower()
    else:
        # FreeTDS encrypts but validates the certificate only with a CA file in freetds.conf.
        assert verified.returncode == 0, verified.stderr


def test_an_encrypted_session_cut_mid_answer_gets_no_encryption_hint(
    tmp_path: Path, driver: str, sqlite_url: str, simulator
) -> None:
    """The login worked encrypted; the connection dropped in the middle of the answer: the error must not advise
    weakening encryption (the hint is for a connection that failed to be made)."""
    sim = simulator([{"name": "cut", "tls": True, "faults": {"disconnect_mid_result": True}}])
    deployment = TenantDeployment(tmp_path, driver, sqlite_url, encrypt="yes")
    deployment.add("cut", sim.ports["cut"], trust_server_certificate=True)
    result = run_cli("-c", str(deployment.config), "collect-once", "acme", "cut", "--json", cwd=tmp_path)
    assert result.returncode == 1, result
    assert "--encrypt" not in result.stdout + result.stderr, result
