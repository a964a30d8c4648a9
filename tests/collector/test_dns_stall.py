"""A server whose name does not resolve in time (the DNS server black-holed): the collection ends at its deadline
named as name resolution, not as a TCP connect, so the user looks at DNS rather than at firewalls.

Runs the collection in a network and mount namespace of its own (``unshare``, root): ``/etc/resolv.conf`` bound to
a file naming a DNS server behind a veth with a static ARP entry, where every packet vanishes."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.drivers import driver_setting
from tests.helpers.simulator import REPO

COLLECT = """
from supervisor.children.collect import ServerSession
from supervisor.children.connection_string import Endpoint
from supervisor.children.flights import collect_within_deadline
from supervisor.children.odbc_driver import OdbcDriver, kind_of
from supervisor.children.targets import Target
name = {driver!r}
target = Target(1, "dns", Endpoint("sql1.example.test", 1433, "u", "p", "no", False), 2.0, "procedure")
session = ServerSession(target, OdbcDriver(name, kind_of(name)), 10.0, keep_connection=False)
print(collect_within_deadline(session, 2.0).failure.message)
"""
NAMESPACE = (
    "mount --make-rprivate / && mount --bind {resolv} /etc/resolv.conf && ip link set lo up"
    " && ip link add v0 type veth peer name v1 && ip addr add 10.99.0.1/24 dev v0 && ip link set v0 up"
    " && ip link set v1 up && ip neigh add 10.99.0.2 lladdr 02:00:00:00:00:02 dev v0 nud permanent"
    " && exec {python} -c {code}"
)


def test_a_dns_stall_is_named_as_name_resolution(tmp_path: Path, driver: str) -> None:
    probe = subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces cannot be made here: {probe.stderr.strip()}")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.99.0.2\noptions timeout:5 attempts:1\n")
    code = COLLECT.format(driver=driver_setting(driver))
    script = NAMESPACE.format(resolv=resolv, python=sys.executable, code=shlex.quote(code))
    result = subprocess.run(["unshare", "-n", "-m", "bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no answer within collection_timeout 2s (during name resolution (DNS))", result
