"""A very small HTTP server run by the parent's own loop: /metrics, /healthz, /readyz.

No thread: the parent forks its children and must stay single-threaded, so the listening socket and
its client sockets are waited on in the loop's one ``wait()`` with the children's pipes. Nothing here
ever blocks the loop. A request is read without blocking (a client has ``CLIENT_TIMEOUT`` seconds from
its accept to send its request line and headers), answered from what the loop already knows, and the
connection closed (HTTP/1.1 with ``Connection: close``). The answer is sent without blocking too: what
the kernel does not take at once is kept and sent again at each turn of the loop (``next_deadline``
asks for a turn every ``SEND_RETRY`` seconds while some answer is unsent), until ``EXCHANGE_TIMEOUT``
seconds after the accept, when the client is dropped. At most ``MAX_CLIENTS`` connections are open at
once: while that many are, the listener is not waited on and new clients wait in the kernel's backlog;
when ``accept`` fails (out of descriptors) the listener rests for ``ACCEPT_PAUSE`` seconds instead of
being retried at once. Forked children close the inherited descriptors (``fork.run_child``).
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

#: Open client connections at most: a few scrapers and probes need a handful; 64 descriptors are 6 % of
#: the usual 1,024, the rest stays for the children's pipes and the system DB.
MAX_CLIENTS = 64
#: Connections the kernel holds (no descriptor of ours) while the endpoint is full.
BACKLOG = 64
#: From accept to the end of the request's headers.
CLIENT_TIMEOUT = 2.0
#: From accept to the last byte of the answer: a slow reader costs bounded time and memory.
EXCHANGE_TIMEOUT = 5.0
#: While some answer is unsent, the loop turns at least this often to send more of it.
SEND_RETRY = 0.02
#: After ``accept`` failed (EMFILE, ENFILE, ENOBUFS...), the listener is not waited on for this long.
ACCEPT_PAUSE = 0.1
MAX_REQUEST_BYTES = 16 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass
class _Client:
    sock: socket.socket
    accepted: float
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    unsent: memoryview | None = None  # the answer's bytes not yet sent; None while reading the request


class HttpEndpoint:
    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        max_clients: int = MAX_CLIENTS,
        client_timeout: float = CLIENT_TIMEOUT,
        exchange_timeout: float = EXCHANGE_TIMEOUT,
    ) -> None:
        """Binds at once: an address in use raises ``OSError`` here, before the supervisor starts."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(BACKLOG)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self._handler = handler
        self._clients: dict[int, _Client] = {}
        self._max_clients = max_clients
        self._client_timeout = client_timeout
        self._exchange_timeout = exchange_timeout
        self._accept_paused_until = 0.0
        self.address: tuple[str, int] | None = listener.getsockname()[:2]

    @property
    def open_clients(self) -> int:
        return len(self._clients)

    def waitables(self) -> list[socket.socket]:
        """The listener unless full or resting, and the clients still sending their request."""
        reading = [c.sock for c in self._clients.values() if c.unsent is None]
        full = len(self._clients) >= self._max_clients
        if full or time.monotonic() < self._accept_paused_until:
            return reading
        return [self._listener, *reading]

    def owns(self, item: object) -> bool:
        return item is self._listener or (isinstance(item, socket.socket) and item.fileno() in self._clients)

    def handle(self, ready: Iterable[object], now: float | None = None) -> None:
        """Serve what ``wait()`` found readable, send more of the unsent answers, drop clients past their
        deadline. Called at every turn of the loop, with or without anything ready."""
        now = time.monotonic() if now is None else now
        for item in ready:
            if item is self._listener:
                self._accept(now)
            elif isinstance(item, socket.socket) and item.fileno() in self._clients:
                self._read(self._clients[item.fileno()])
        for client in list(self._clients.values()):
            if client.unsent is not None:
                self._send(client)
        for client in [c for c in self._clients.values() if now >= c.deadline]:
            self._close(client)

    def next_deadline(self) -> float | None:
        now = time.monotonic()
        deadlines = [c.deadline for c in self._clients.values()]
        if any(c.unsent is not None for c in self._clients.values()):
            deadlines.append(now + SEND_RETRY)
        if self._accept_paused_until > now:
            deadlines.append(self._accept_paused_until)
        return min(deadlines, default=None)

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._close(client)
        self._listener.close()

    def _accept(self, now: float) -> None:
        self._accept_paused_until = 0.0
        while len(self._clients) < self._max_clients:
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # that client gave up while in the backlog
            except OSError:  # out of descriptors, of buffers...: rest instead of spinning on a readable listener
                self._accept_paused_until = now + ACCEPT_PAUSE
                return
            sock.setblocking(False)
            self._clients[sock.fileno()] = _Client(sock, now, now + self._client_timeout)

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
                self._answer(client, (400, "text/plain", b"request too large\n"), with_body=True)
            return
        self._answer(client, *self._respond(bytes(client.data)))

    def _respond(self, request: bytes) -> tuple[Response, bool]:
        """The answer, and whether its body is sent (not for HEAD)."""
        head = request.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("latin-1")
        lines = head.splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) < 2:
            return (400, "text/plain", b"bad request\n"), True
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return (405, "text/plain", b"only GET and HEAD\n"), True
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return self._handler(target.split("?", 1)[0], headers), method != "HEAD"

    def _answer(self, client: _Client, response: Response, with_body: bool) -> None:
        status, content_type, body = response
        allow = "Allow: GET, HEAD\r\n" if status == 405 else ""
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{allow}Connection: close\r\n\r\n"
        ).encode("ascii")
        client.unsent = memoryview(head + body if with_body else head)
        client.deadline = client.accepted + self._exchange_timeout
        self._send(client)

    def _send(self, client: _Client) -> None:
        """As much of the answer as the kernel takes now, never waiting; closed when all is sent."""
        if client.unsent is None:
            return
        try:
            while client.unsent:
                sent = client.sock.send(client.unsent)
                client.unsent = client.unsent[sent:]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass  # the client went away: nothing more to send
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
