"""TLS on a ``tls: true`` server: TDS 7.x encryption and TDS 8.0 strict, with the generated certificate."""

from __future__ import annotations

from pathlib import Path

import pyodbc
import pytest

from tests.helpers.simulator import Simulator, StartSimulator
from tests.sim.odbc import connection_string, result_sets


@pytest.fixture
def tls_sim(simulator: StartSimulator) -> Simulator:
    return simulator([{"name": "secure", "tls": True}, {"name": "open"}])


def call(connection_text: str) -> str:
    with pyodbc.connect(connection_text, timeout=5) as conn:
        sets = result_sets(conn.cursor().execute("{CALL collector.usp_collect_snapshot}"))
    return str(sets[0][1][0][1])


def test_ready_line_names_the_certificate(tls_sim: Simulator) -> None:
    secure, plain = tls_sim.ready["servers"]
    assert Path(secure["certificate"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "certificate" not in plain


def test_driver18_encrypt_yes_with_trust_connects(tls_sim: Simulator) -> None:
    base = connection_string("msodbc18", tls_sim.ports["secure"]).replace("Encrypt=no", "Encrypt=yes")
    assert call(base + ";TrustServerCertificate=yes") == "secure"


def test_driver18_encrypt_yes_without_trust_is_refused(tls_sim: Simulator) -> None:
    base = connection_string("msodbc18", tls_sim.ports["secure"]).replace("Encrypt=no", "Encrypt=yes")
    with pytest.raises(pyodbc.Error, match="certificate verify failed"):
        call(base)


def test_driver18_strict_with_server_certificate_connects(tls_sim: Simulator) -> None:
    certificate = tls_sim.ready["servers"][0]["certificate"]
    base = connection_string("msodbc18", tls_sim.ports["secure"]).replace("Encrypt=no", "Encrypt=strict")
    assert call(f"{base};ServerCertificate={certificate}") == "secure"


def test_forced_encryption_for_clients_asking_none(tls_sim: Simulator) -> None:
    base = connection_string("msodbc18", tls_sim.ports["secure"])
    with pytest.raises(pyodbc.Error, match="certificate verify failed"):
        call(base)
    assert call(base + ";TrustServerCertificate=yes") == "secure"


def test_freetds_encryption_require(tls_sim: Simulator) -> None:
    assert call(connection_string("freetds", tls_sim.ports["secure"]) + ";Encryption=require") == "secure"


def test_freetds_require_against_a_server_without_tls_fails(tls_sim: Simulator) -> None:
    with pytest.raises(pyodbc.Error):
        call(connection_string("freetds", tls_sim.ports["open"]) + ";Encryption=require")
