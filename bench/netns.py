"""Simulated hosts for benchmarks: Linux network namespaces joined to this machine by veth pairs, each process
run in one with a hostname of its own (a UTS namespace), and a TCP forwarder for services that listen on
loopback only (PostgreSQL).

Addresses come from a /24 of 10.231.0.0/16 that no interface or route of this machine touches: pair i has
10.231.X.(4i+1)/30 on the host side and 10.231.X.(4i+2)/30 in its namespace, and each namespace routes that /24,
and nothing else, via its host-side address. Services for every simulated host listen on the first host-side
address (``service_address``). Forwarding stays off on the host, so packets only go between this machine's
own veth addresses and the namespaces: nothing reaches the real network. Needs root (CAP_NET_ADMIN,
CAP_SYS_ADMIN); ``netns_unavailable`` says why not. ``SimHosts.destroy`` removes everything it made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

SUPERNET = ipaddress.ip_network("10.231.0.0/16")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or f'exit {result.returncode}'}")
    return result


def netns_unavailable() -> str | None:
    """None when this process can make network namespaces, else why not (one line)."""
    name = f"cs-probe-{os.getpid()}-{threading.get_ident() % 10000}"
    try:
        made = _ip("netns", "add", name, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run 'ip': {exc}"
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip() or f'exit {made.returncode}'}"
    _ip("netns", "del", name, check=False)
    try:
        probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run 'unshare': {exc}"
    if probe.returncode != 0:
        return f"'unshare --uts' failed: {probe.stderr.strip() or f'exit {probe.returncode}'}"
    return None


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    addresses, routes = _ip("-4", "-o", "addr", "show").stdout, _ip("-4", "route", "show", "table", "all").stdout
    lines = addresses.splitlines() + routes.splitlines()
    for line in lines:
        for word in line.split():
            with contextlib.suppress(ValueError):
                network = ipaddress.ip_network(word, strict=False)
                if network.version == 4 and network.prefixlen > 0:
                    used.append(network)
    return used


def free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 of ``SUPERNET`` that overlaps no address or route of this machine, tried from ``seed`` on."""
    used = _used_networks()
    for step in range(256):
        candidate = ipaddress.ip_network(f"10.231.{(seed + step) % 256}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return candidate  # type: ignore[return-value]
    raise RuntimeError(f"no free /24 in {SUPERNET}")


class SimHosts:
    """``count`` namespaces named ``<tag>-n<i>`` with veth ``<tag>h<i>`` on this side (names fit 15 characters)."""

    def __init__(self, count: int, tag: str, subnet: ipaddress.IPv4Network) -> None:
        self.count = count
        self.tag = tag
        self.subnet = subnet
        self.namespaces: list[str] = []
        self.links: list[str] = []

    def host_address(self, index: int) -> str:
        return str(self.subnet.network_address + 4 * index + 1)

    def address(self, index: int) -> str:
        return str(self.subnet.network_address + 4 * index + 2)

    @property
    def service_address(self) -> str:
        return self.host_address(0)

    def create(self) -> None:
        for index in range(self.count):
            namespace, outside, inside = f"{self.tag}-n{index}", f"{self.tag}h{index}", f"{self.tag}n{index}"
            _ip("netns", "add", namespace)
            self.namespaces.append(namespace)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
            self.links.append(outside)
            _ip("addr", "add", f"{self.host_address(index)}/30", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("-n", namespace, "addr", "add", f"{self.address(index)}/30", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "route", "add", str(self.subnet), "via", self.host_address(index))

    def boot_id_file(self, index: int) -> Path:
        """Namespace ``index``'s own kernel boot id (bound over ``/proc/sys/kernel/random/boot_id`` in it): a
        simulated host is another machine to ``supervisor.process_identity``, as a real one is, though its PIDs
        are visible from here."""
        path = Path(tempfile.gettempdir()) / f"{self.tag}-boot-id-{index}"
        if not path.exists():
            path.write_text(f"{uuid.uuid4()}\n")
        return path

    def command(self, index: int, hostname: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run in namespace ``index`` under ``hostname`` (it execs: the process is ``argv``'s)."""
        boot_id = str(self.boot_id_file(index))
        return ["ip", "netns", "exec", self.namespaces[index], "unshare", "--uts", "sh", "-c",
                'mount --bind "$1" /proc/sys/kernel/random/boot_id && hostname "$0" && shift && exec "$@"',
                hostname, boot_id, *argv]  # fmt: skip

    def destroy(self) -> list[str]:
        """Remove the namespaces and links made (the processes in them must be gone); returns what failed."""
        problems = []
        for index in range(self.count):
            self.boot_id_file(index).unlink(missing_ok=True)
        for namespace in self.namespaces:
            result = _ip("netns", "del", namespace, check=False)
            if result.returncode != 0:
                problems.append(f"netns {namespace}: {result.stderr.strip()}")
        for link in self.links:  # gone with its peer's namespace, unless a process still holds that namespace
            if _ip("link", "show", link, check=False).returncode == 0:
                result = _ip("link", "del", link, check=False)
                if result.returncode != 0:
                    problems.append(f"link {link}: {result.stderr.strip()}")
        self.namespaces, self.links = [], []
        return problems


def bindable(port: int, address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the simulator binds: TIME_WAIT is no owner
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


class TcpForwarder:
    """Accepts on ``listen`` and copies bytes both ways to ``target``: one thread per direction and connection."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.settimeout(0.5)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="forwarder", daemon=True)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpForwarder:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            self.connections += 1
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._connection, args=(client, upstream), daemon=True).start()

    def _connection(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._sockets -= {client, upstream}
        client.close()
        upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        """Copy until end of file (or an error) on ``source``, then end the stream towards ``sink``."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stop.set()
        self.server.close()
        self._thread.join(5)
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()
