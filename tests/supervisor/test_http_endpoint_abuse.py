"""The parent's HTTP endpoint against abusive clients, driven here as the parent's loop drives it.

Real sockets in the test process: idle clients beyond the cap, accept failing for lack of descriptors, a
client that never reads a large answer, HEAD and 405. The loop below is ``wait_and_dispatch``'s: one
``wait()`` on the endpoint's waitables with a timeout from ``next_deadline()``, then ``handle()`` at every
turn. Timings asserted are only generous safety nets; turns are counted to catch a busy loop.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait

import pytest

from supervisor.parent.http_endpoint import HttpEndpoint, Response

BIG = b"x" * (8 * 1024 * 1024)  # more than the kernel buffers for a reader with a small receive buffer


def _handler(path: str, headers: dict[str, str]) -> Response:
    if path == "/big":
        return 200, "text/plain", BIG
    if path == "/healthz":
        return 200, "application/json", b'{"healthy": true}\n'
    return 404, "text/plain", b"not found\n"


@contextmanager
def _endpoint(**options: float) -> Iterator[HttpEndpoint]:
    endpoint = HttpEndpoint("127.0.0.1", 0, _handler, **options)  # type: ignore[arg-type]
    try:
        yield endpoint
    finally:
        endpoint.close()


class _Loop:
    """The parent's loop around one endpoint: counts turns, times each ``handle()``."""

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self.endpoint = endpoint
        self.turns = 0
        self.longest_handle = 0.0
        self.most_clients = 0

    def run(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            deadline = self.endpoint.next_deadline()
            now = time.monotonic()
            timeout = min(1.0, end - now, *(() if deadline is None else (deadline - now,)))
            ready = wait(self.endpoint.waitables(), max(0.0, timeout))
            started = time.monotonic()
            self.endpoint.handle([item for item in ready if self.endpoint.owns(item)])
            self.longest_handle = max(self.longest_handle, time.monotonic() - started)
            self.most_clients = max(self.most_clients, self.endpoint.open_clients)
            self.turns += 1
            if until():
                return True
        return until()


class _Client:
    """A client whose socket is read without blocking, from the test's loop."""

    def __init__(self, port: int, request: bytes | None = None, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        if request is not None:
            self.sock.sendall(request)
        self.sock.setblocking(False)
        self.received = bytearray()
        self.closed = False

    def done(self) -> bool:
        """Reads what has come; True once the server closed the connection."""
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.received += chunk
        return True

    def answer(self) -> tuple[bytes, dict[str, str], bytes]:
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        return status.encode(), headers, body

    def close(self) -> None:
        self.sock.close()


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_idle_clients_beyond_the_cap_wait_in_the_backlog_and_a_probe_is_still_answered() -> None:
    with _endpoint(max_clients=4, client_timeout=0.5) as endpoint:
        assert endpoint.address is not None
        port = endpoint.address[1]
        idle = [_Client(port) for _ in range(10)]
        loop = _Loop(endpoint)
        loop.run(0.3)
        assert endpoint.open_clients == 4  # the other 6 are in the kernel's backlog, not in the parent's fds
        probe = _Client(port, _get("/healthz"))
        assert loop.run(10, probe.done), "the probe was never answered"
        status, _headers, body = probe.answer()
        assert status == b"HTTP/1.1 200 OK" and body == b'{"healthy": true}\n'
        assert loop.most_clients <= 4
        # 3 rounds of idle clients timing out at 0.5 s, a handful of turns each: a busy loop makes thousands
        assert loop.turns < 200, f"{loop.turns} turns: the loop spins while the endpoint is full"
        assert loop.run(2, lambda: all(client.done() for client in idle)), "idle clients not dropped"
        assert all(client.received == b"" for client in idle)
        for client in [*idle, probe]:
            client.close()


def test_accept_out_of_descriptors_rests_the_listener_instead_of_spinning() -> None:
    with _endpoint() as endpoint:
        assert endpoint.address is not None
        clients = [_Client(endpoint.address[1], _get("/healthz")) for _ in range(3)]
        loop = _Loop(endpoint)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest_free = socket.socket()
        limit = lowest_free.fileno()  # every new descriptor is numbered at least this: accept fails EMFILE
        lowest_free.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            loop.run(0.5)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert endpoint.open_clients == 0
        assert loop.turns < 100, f"{loop.turns} turns in 0.5 s: the loop spins on the readable listener"
        assert loop.run(10, lambda: all(client.done() for client in clients)), "not served once fds are back"
        assert all(client.answer()[0] == b"HTTP/1.1 200 OK" for client in clients)
        for client in clients:
            client.close()


@pytest.mark.timeout(60)  # safety net: a blocking send would hang the test thread forever
def test_a_client_not_reading_a_large_answer_never_blocks_the_loop_and_gets_it_all_later() -> None:
    with _endpoint(exchange_timeout=20) as endpoint:
        assert endpoint.address is not None
        port = endpoint.address[1]
        slow = _Client(port, _get("/big"), rcvbuf=4096)
        loop = _Loop(endpoint)
        loop.run(0.5)  # the slow client reads nothing meanwhile
        assert endpoint.open_clients == 1, "the slow client should still be being served"
        deadline = endpoint.next_deadline()
        assert deadline is not None and deadline - time.monotonic() <= 0.1, "no prompt retry of the unsent bytes"
        probes = [_Client(port, _get("/healthz")) for _ in range(3)]
        assert loop.run(10, lambda: all(probe.done() for probe in probes)), "probes not answered"
        assert all(probe.answer()[0] == b"HTTP/1.1 200 OK" for probe in probes)
        assert slow.received == b"" and endpoint.open_clients == 1
        assert loop.run(30, slow.done), "the slow client never got its whole answer"
        _status, headers, body = slow.answer()
        assert int(headers["content-length"]) == len(BIG) and body == BIG
        assert loop.longest_handle < 0.4, f"handle() took {loop.longest_handle:.2f} s: it blocked on a send"
        for client in [slow, *probes]:
            client.close()


@pytest.mark.timeout(60)
def test_a_client_never_reading_is_dropped_at_its_exchange_deadline() -> None:
    with _endpoint(client_timeout=0.3, exchange_timeout=1.5) as endpoint:
        assert endpoint.address is not None
        started = time.monotonic()
        slow = _Client(endpoint.address[1], _get("/big"), rcvbuf=4096)
        loop = _Loop(endpoint)
        loop.run(0.8)
        assert endpoint.open_clients == 1, "dropped at the request's timeout although its answer was under way"
        assert loop.run(10, lambda: endpoint.open_clients == 0), "the slow client was never dropped"
        assert time.monotonic() - started >= 1.4
        assert loop.run(10, slow.done) and len(slow.received) < len(BIG)
        slow.close()


def test_head_has_the_get_length_and_no_body_and_405_names_the_allowed_methods() -> None:
    with _endpoint() as endpoint:
        assert endpoint.address is not None
        port = endpoint.address[1]
        get, head, post = (_Client(port, _get("/healthz", m)) for m in ("GET", "HEAD", "POST"))
        assert _Loop(endpoint).run(10, lambda: all(c.done() for c in (get, head, post)))
        _, get_headers, get_body = get.answer()
        head_status, head_headers, head_body = head.answer()
        assert head_status == b"HTTP/1.1 200 OK" and head_body == b""
        assert head_headers["content-length"] == get_headers["content-length"] == str(len(get_body)) != "0"
        post_status, post_headers, _ = post.answer()
        assert post_status == b"HTTP/1.1 405 Method Not Allowed" and post_headers["allow"] == "GET, HEAD"
        for client in (get, head, post):
            client.close()
