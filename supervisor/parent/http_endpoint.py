"""A very small HTTP server run by the parent's own loop: /metrics, /healthz, /readyz.

No thread: the parent forks its children and must stay single-threaded, so the listening socket and
its client sockets are waited on in the loop's one ``wait()`` with the children's pipes. A request is
read without blocking (a client has ``CLIENT_TIMEOUT`` seconds to send its request line and headers),
answered at once from what the loop already knows, and the connection closed (HTTP/1.1 with
``Connection: close``). Forked children close the inherited descriptors (``fork.run_child``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: What a handler returns: status code, content type, body.
Response = tuple[int, str, bytes]
Handler = Callable[[str, dict[str, str]], Response]

CLIENT_TIMEOUT = 2.0
MAX_REQUEST_BYTES = 16 * 1024
#: A client that does not read the answer holds the loop at most this long.
SEND_TIMEOUT = 0.5
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)


class HttpEndpoint:
    def __init__(self, host: str, port: int, handler: Handler) -> None:
        """Binds at once: an address in use raises ``OSError`` here, before the supervisor starts."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self._handler = handler
        self._clients: dict[int, _Client] = {}
        self.address: tuple[str, int] | None = listener.getsockname()[:2]

    def waitables(self) -> list[socket.socket]:
        return [self._listener, *(client.sock for client in self._clients.values())]

    def owns(self, item: object) -> bool:
        return item is self._listener or (isinstance(item, socket.socket) and item.fileno() in self._clients)

    def handle(self, ready: Iterable[object], now: float | None = None) -> None:
        """Serve what ``wait()`` found readable; drop clients past their deadline."""
        now = time.monotonic() if now is None else now
        for item in ready:
            if item is self._listener:
                self._accept(now)
            elif isinstance(item, socket.socket) and item.fileno() in self._clients:
                self._read(self._clients[item.fileno()])
        for client in [c for c in self._clients.values() if now >= c.deadline]:
            self._close(client)

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self._clients.values()), default=None)

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._close(client)
        self._listener.close()

    def _accept(self, now: float) -> None:
        for _ in range(64):
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of descriptors: the client retries, the loop goes on
            sock.setblocking(False)
            self._clients[sock.fileno()] = _Client(sock, now + CLIENT_TIMEOUT)

    def _read(self, client: _Client) -> None:
        try:
            chunk = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(client)
            return
        client.data += chunk
        if b"\r\n\r\n" not in client.data and b"\n\n" not in client.data:
            if len(client.data) > MAX_REQUEST_BYTES:
                self._answer(client, (400, "text/plain", b"request too large\n"))
            return
        self._answer(client, self._respond(bytes(client.data)))

    def _respond(self, request: bytes) -> Response:
        head = request.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("latin-1")
        lines = head.splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) < 2:
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status, content_type, body = self._handler(target.split("?", 1)[0], headers)
        return status, content_type, b"" if method == "HEAD" else body

    def _answer(self, client: _Client, response: Response) -> None:
        status, content_type, body = response
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        with contextlib.suppress(OSError):
            client.sock.settimeout(SEND_TIMEOUT)
            client.sock.sendall(head + body)
        self._close(client)

    def _close(self, client: _Client) -> None:
        self._clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(OSError):
            client.sock.close()


class NoEndpoint:
    """``[metrics] listen`` empty: nothing to wait on, nothing to serve."""

    address: tuple[str, int] | None = None

    def waitables(self) -> list[socket.socket]:
        return []

    def owns(self, item: object) -> bool:
        return False

    def handle(self, ready: Iterable[object], now: float | None = None) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def close(self) -> None:
        pass
