"""SIGHUP applies a changed ``metrics.listen``: the endpoint moves to the new address; one that cannot be used
(taken, not an address) is ``config.reload_failed`` naming it, and the old endpoint and settings stay. (It used
to say ``config.reloaded`` and go on serving the old port, and the next start of that file then failed.)"""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request

from tests.helpers.deployment import Deployment
from tests.helpers.ports import free_ports
from tests.helpers.waiting import wait_until


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def test_a_reload_moves_the_metrics_endpoint_or_says_why_not(deployment: Deployment) -> None:
    first, second, taken = free_ports(3)
    deployment.metrics = {"listen": f"127.0.0.1:{first}"}
    deployment.write_config()
    deployment.cli("init-db")
    supervisor = deployment.start()
    wait_until(lambda: answers(first), 30, f"the endpoint on {first}")

    deployment.metrics = {"listen": f"127.0.0.1:{second}"}
    deployment.write_config()
    supervisor.signal(signal.SIGHUP)
    wait_until(lambda: answers(second), 30, f"the endpoint on {second}")
    assert not answers(first)
    assert supervisor.events("config.reloaded")

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        deployment.metrics = {"listen": f"127.0.0.1:{taken}"}
        deployment.write_config()
        supervisor.signal(signal.SIGHUP)
        [failed] = supervisor.wait_event("config.reload_failed")
    assert "metrics.listen" in failed["error"] and str(taken) in failed["error"]
    assert answers(second)
    assert len(supervisor.events("config.reloaded")) == 1
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(30) == 0
