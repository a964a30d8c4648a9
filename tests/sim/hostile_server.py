"""A hostile SQL Server for the tests: a TDS server whose answer to the collection is wrong on purpose.

    python -m tests.sim.hostile_server PORT=SCENARIO [PORT=SCENARIO ...]

listens on 127.0.0.1, one scenario per port (``SCENARIOS``), prints ``{"event": "ready"}`` once all listen
and serves until SIGTERM. Any login is accepted. A scenario is the contract's four result sets with one
thing wrong (a value of another type, out of range, too long, invalid UTF-16, a wait type twice, a sample
time from a broken clock), or an answer that never ends, or a PRELOGIN that asks for TLS and then silence, or
a login that routes the client to another port.
Everything but the collection (a driver's own probes) is answered with a bare DONE. Built on the
simulator's TDS encoders; the collector never imports this module, and the simulator does not know it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlserver_sim import login, packets, tokens
from sqlserver_sim.tokens import ColumnDef, Kind
from supervisor.procedures.resultsets import ADHOC_BATCH_MARKER, CONTRACT_VERSION, PROCEDURE_NAME, RESULT_SETS

STARTED = dt.datetime(2026, 1, 5, 6, 0, 0)
VERSION = (16, 0, 4135)
_KINDS = {"int": Kind.INT, "bigint": Kind.BIGINT, "float": Kind.FLOAT, "nvarchar": Kind.NVARCHAR,
          "datetime2": Kind.DATETIME2}  # fmt: skip
_PROCEDURE = PROCEDURE_NAME.encode("utf-16-le")
_MARKER = ADHOC_BATCH_MARKER.encode("utf-16-le")
#: An error text that would colour a terminal, set its title, erase a character and end a PostgreSQL text.
ERROR_WITH_CONTROLS = "broken \x1b[31mred\x1b]0;owned\x07 back\x08space nul\x00end"
#: Messages before the answer of ``info_flood``: they hold the collection's thread in the driver (manager) for
#: seconds of CPU after its deadline, the socket cut or not (the bytes have all arrived).
INFO_FLOOD = 10_000
#: Rows per write of an endless result set.
_STREAM_ROWS = 2000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def plain_values(n: int) -> dict[str, list[dict[str, Any]]]:
    """A healthy answer for the ``n``-th collection (counters grow with ``n``)."""
    now = utcnow()
    return {
        "instance": [{"contract_version": CONTRACT_VERSION, "server_name": "HOSTILE", "product_version": "16.0.4135.4",
                      "edition": "Developer Edition", "engine_edition": 3, "host_platform": "Windows",
                      "database_name": "master", "cpu_count": 4, "sqlserver_start_time": STARTED,
                      "sample_time_utc": now}],
        "cpu": [{"record_id": 100 + n, "record_time_utc": now, "sql_cpu_percent": 20, "system_idle_percent": 70,
                 "host_cpu_percent": None}],
        "counters": [{"total_physical_memory_kb": 16 << 20, "available_physical_memory_kb": 8 << 20,
                      "total_server_memory_kb": 4 << 20, "target_server_memory_kb": 6 << 20, "user_connections": 42,
                      "batch_requests_total": 1000 + 100 * n, "memory_used_percent": None}],
        "waits": [wait_row("LCK_M_X", 10 + n, 1000 + 50 * n, 10 + n),
                  wait_row("PAGEIOLATCH_SH", 5 + n, 500 + 20 * n, 5)],
    }  # fmt: skip


def wait_row(wait_type: object, count: object, wait_ms: object, signal_ms: object) -> dict[str, Any]:
    return {"wait_type": wait_type, "waiting_tasks_count": count, "wait_time_ms": wait_ms,
            "signal_wait_time_ms": signal_ms}  # fmt: skip


def columns(set_name: str, kinds: dict[str, Kind]) -> list[ColumnDef]:
    """The set's contract columns as SQL Server types them, except those ``kinds`` retypes (text: nvarchar(4000))."""
    spec = next(spec for spec in RESULT_SETS if spec.name == set_name)
    return [ColumnDef(c.name, kinds[c.name], length=4000) if c.name in kinds
            else ColumnDef(c.name, _KINDS[c.sql_type.value], length=c.length) for c in spec.columns]  # fmt: skip


def result_set(cols: list[ColumnDef], rows: list[dict[str, Any]]) -> bytes:
    body = b"".join(tokens.row(cols, [row[c.name] for c in cols]) for row in rows)
    return tokens.colmetadata(cols) + body + tokens.done(tokens.DONE_MORE | tokens.DONE_COUNT, tokens.CMD_SELECT,
                                                         len(rows))  # fmt: skip


@dataclass(frozen=True)
class Broken:
    """The plain answer with ``change`` applied to its values and ``kinds`` retyping columns: set → column → Kind."""

    change: Callable[[dict[str, list[dict[str, Any]]]], None] = lambda values: None
    kinds: dict[str, dict[str, Kind]] = field(default_factory=dict)
    final: bytes = tokens.done(tokens.DONE_FINAL, tokens.CMD_SELECT)
    head: bytes = b""

    def answer(self, n: int) -> bytes:
        values = plain_values(n)
        self.change(values)
        sets = b"".join(result_set(columns(s.name, self.kinds.get(s.name, {})), values[s.name]) for s in RESULT_SETS)
        return self.head + sets + self.final


def _set(set_name: str, **values: Any) -> Callable[[dict[str, list[dict[str, Any]]]], None]:
    return lambda answer: answer[set_name][0].update(values)


def _waits(*rows: dict[str, Any], plain: bool = True) -> Callable[[dict[str, list[dict[str, Any]]]], None]:
    """The waits: ``rows``, after a plain one unless a column is retyped (the plain values would not fit)."""
    first = [wait_row("PAGEIOLATCH_SH", 5, 50, 1)] if plain else []
    return lambda answer: answer.update(waits=[*first, *rows])


def _counter_as(kind: Kind, column: str, value: object) -> Broken:
    return Broken(_set("counters", **{column: value}), {"counters": {column: kind}})


# fmt: off
SCENARIOS: dict[str, Broken] = {
    "good": Broken(),
    "text_batch_requests": _counter_as(Kind.NVARCHAR, "batch_requests_total", "1000"),
    "negative_batch_requests": Broken(_set("counters", batch_requests_total=-1000)),
    "negative_connections": Broken(_set("counters", user_connections=-5)),
    "huge_connections": Broken(_set("counters", user_connections=2**62)),
    "fraction_connections": _counter_as(Kind.FLOAT, "user_connections", 12.75),
    "text_connections": _counter_as(Kind.NVARCHAR, "user_connections", "forty-two"),
    "bit_connections": _counter_as(Kind.BIT, "user_connections", True),
    "huge_memory": Broken(_set("counters", total_server_memory_kb=2**62)),
    "float_huge_memory": _counter_as(Kind.FLOAT, "total_server_memory_kb", 1e30),
    "float_infinite_memory": _counter_as(Kind.FLOAT, "total_server_memory_kb", float("inf")),
    "text_cpu": Broken(_set("cpu", sql_cpu_percent="abc"), {"cpu": {"sql_cpu_percent": Kind.NVARCHAR}}),
    "text_contract": Broken(_set("instance", contract_version=str(CONTRACT_VERSION)),
                            {"instance": {"contract_version": Kind.NVARCHAR}}),
    "future_time": Broken(_set("instance", sample_time_utc=dt.datetime(9999, 12, 31, 23, 59, 59))),
    "ancient_time": Broken(_set("instance", sample_time_utc=dt.datetime(1, 1, 1))),
    "duplicate_waits": Broken(_waits(wait_row("LCK_M_X", 10, 100, 1), wait_row("lck_m_x ", 1, 1, 1))),
    "long_wait_type": Broken(_waits(wait_row("W" * 64, 5, 5, 0)), {"waits": {"wait_type": Kind.NVARCHAR}}),
    "integer_wait_type": Broken(_waits(wait_row(7, 5, 1, 0), plain=False), {"waits": {"wait_type": Kind.INT}}),
    "text_wait_count": Broken(_waits(wait_row("LCK_M_X", "many", 1, 0), plain=False),
                              {"waits": {"waiting_tasks_count": Kind.NVARCHAR}}),
    "negative_waits": Broken(_waits(wait_row("LCK_M_X", -5, -100, -1))),
    "error_without_message": Broken(final=tokens.done(tokens.DONE_ERROR, tokens.CMD_SELECT)),
    # PRINT in a loop: each message is a diagnostic record the driver manager walks its list for (quadratic).
    "info_flood": Broken(head=tokens.info(0, "x" * 20, 0) * INFO_FLOOD),
    "error_with_control_characters": Broken(final=tokens.error(50000, ERROR_WITH_CONTROLS)
                                            + tokens.done(tokens.DONE_ERROR, tokens.CMD_SELECT)),
}
# fmt: on
#: Not an answer of the four sets (``Session``): invalid UTF-16 in a wait type, waits that never end, a
#: PRELOGIN answer that asks for TLS followed by silence.
SPECIAL = ("invalid_utf16", "endless_waits", "tls_stall", "endless_text")
#: ``route:PORT``: a login answered with a TDS routing ENVCHANGE (an Azure gateway's redirect) to 127.0.0.1:PORT,
#: then silence: the driver (Driver 18) follows it there.
ROUTE = "route:"
ENV_ROUTING = 20


def routing(host: str, port: int) -> bytes:
    """ENVCHANGE type 20: protocol TCP, the port, the host; the old value empty."""
    name = host.encode("utf-16-le")
    value = struct.pack("<BHH", 0, port, len(host)) + name
    body = bytes((ENV_ROUTING,)) + struct.pack("<H", len(value)) + value + struct.pack("<H", 0)
    return struct.pack("<BH", tokens.ENVCHANGE, len(body)) + body


def invalid_utf16(n: int) -> bytes:
    """The four sets, the only wait type a lone high surrogate (0xD800) then 'A'."""
    values = plain_values(n)
    head = b"".join(result_set(columns(s.name, {}), values[s.name]) for s in RESULT_SETS[:-1])
    wait_cols = columns("waits", {})
    bad_text = b"\x00\xd8A\x00"
    row = (bytes((tokens.ROW,)) + struct.pack("<H", len(bad_text)) + bad_text
           + b"".join(c.encode_value(v) for c, v in zip(wait_cols[1:], (5 + n, 5, 0), strict=True)))  # fmt: skip
    waits = tokens.colmetadata(wait_cols) + row + tokens.done(tokens.DONE_MORE | tokens.DONE_COUNT,
                                                              tokens.CMD_SELECT, 1)  # fmt: skip
    return head + waits + tokens.done(tokens.DONE_FINAL, tokens.CMD_SELECT)


class Session:
    def __init__(self, scenario: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.scenario = scenario
        self.reader = reader
        self.writer = writer
        self.collections = 0

    async def send(self, payload: bytes, final: bool = True) -> None:
        self.writer.write(packets.encode_packets(packets.TABULAR_RESULT, payload, packets.DEFAULT_PACKET_SIZE,
                                                 final=final))  # fmt: skip
        await self.writer.drain()

    async def run(self) -> None:
        try:
            if await self._login():
                await self._serve()
        except (ConnectionError, asyncio.IncompleteReadError, packets.ProtocolError, OSError):
            pass
        finally:
            self.writer.transport.abort()

    async def _login(self) -> bool:
        if await packets.read_message(self.reader) is None:
            return False
        encryption = login.ENCRYPT_ON if self.scenario == "tls_stall" else login.ENCRYPT_NOT_SUP
        await self.send(login.build_prelogin_response(VERSION, encryption))
        if self.scenario == "tls_stall":
            while await self.reader.read(65536):  # the client's TLS hello is never answered
                pass
            return False
        if await packets.read_message(self.reader) is None:
            return False
        await self.send(
            tokens.envchange_text(tokens.ENV_DATABASE, "master", "master")
            + tokens.envchange_bytes(tokens.ENV_COLLATION, tokens.COLLATION)
            + tokens.envchange_text(tokens.ENV_LANGUAGE, "us_english")
            + tokens.loginack("Microsoft SQL Server", VERSION)
            + tokens.envchange_text(tokens.ENV_PACKET_SIZE, "4096", "4096")
            + (routing("127.0.0.1", int(self.scenario[len(ROUTE) :])) if self.scenario.startswith(ROUTE) else b"")
            + tokens.done()
        )
        if self.scenario.startswith(ROUTE):
            while await self.reader.read(65536):  # the client went to the routed address, or is silent here
                pass
            return False
        return True

    async def _serve(self) -> None:
        while (message := await packets.read_message(self.reader)) is not None:
            if message.type == packets.ATTENTION:
                await self.send(tokens.done(tokens.DONE_ATTN))
            elif message.type == packets.TRANSACTION_MANAGER:
                await self.send(tokens.envchange_bytes(tokens.ENV_BEGIN_TRAN, b"\x01" * 8) + tokens.done())
            elif _PROCEDURE in message.payload or _MARKER in message.payload:
                self.collections += 1
                await self._collection()
            else:
                await self.send(tokens.done())

    async def _collection(self) -> None:
        n = self.collections
        if self.scenario == "invalid_utf16":
            await self.send(invalid_utf16(n))
        elif self.scenario == "endless_waits":
            await self._endless_waits(n)
        elif self.scenario == "endless_text":
            await self._endless_text(n)
        else:
            await self.send(SCENARIOS[self.scenario].answer(n))

    async def _endless_text(self, n: int) -> None:
        """The instance set's ``server_name`` as a TEXT value announcing 2 GB, then its bytes for as long as the
        client reads them: the driver keeps the whole value (no row cap applies inside one)."""
        values = plain_values(n)["instance"][0]
        cols = columns("instance", {})
        text_type = bytes((0x23,)) + struct.pack("<I", 0x7FFFFFFF) + tokens.COLLATION + b"\x01" + tokens.us_varchar("t")
        meta = bytearray((tokens.COLMETADATA,)) + struct.pack("<H", len(cols))
        row = bytearray((tokens.ROW,))
        for column in cols:
            meta += struct.pack("<IH", 0, 1) + (text_type if column.name == "server_name" else column.type_info)
            meta += tokens.b_varchar(column.name)
        for column in cols:
            if column.name == "server_name":  # TextPtr (16 bytes), timestamp (8), LONGLEN, then the bytes
                row += b"\x10" + b"\x01" * 16 + b"\x00" * 8 + struct.pack("<I", 0x7FFFFFF0)
                break
            row += column.encode_value(values[column.name])
        await self.send(bytes(meta + row), final=False)
        chunk = b"A" * 32_000
        while True:
            await self.send(chunk, final=False)

    async def _endless_waits(self, n: int) -> None:
        """Three sets, then wait rows for as long as the client reads them."""
        values = plain_values(n)
        head = b"".join(result_set(columns(s.name, {}), values[s.name]) for s in RESULT_SETS[:-1])
        wait_cols = columns("waits", {})
        await self.send(head + tokens.colmetadata(wait_cols), final=False)
        first = 0
        while True:
            rows = (tokens.row(wait_cols, (f"ENDLESS_{i:012d}", 1, 1, 0)) for i in range(first, first + _STREAM_ROWS))
            await self.send(b"".join(rows), final=False)
            first += _STREAM_ROWS


async def serve(assignments: dict[int, str]) -> None:
    servers = []
    for port, scenario in assignments.items():

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scenario: str = scenario) -> None:
            await Session(scenario, reader, writer).run()

        servers.append(await asyncio.start_server(handle, "127.0.0.1", port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signo, stop.set)
    print(json.dumps({"event": "ready", "ports": {str(p): s for p, s in assignments.items()}}), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def parse_arguments(arguments: list[str]) -> dict[int, str]:
    assignments = {}
    for argument in arguments:
        port, _, scenario = argument.partition("=")
        routed = scenario.startswith(ROUTE) and scenario[len(ROUTE) :].isdigit()
        if scenario not in SCENARIOS and scenario not in SPECIAL and not routed:
            raise SystemExit(f"unknown scenario {scenario!r}; known: {', '.join([*SCENARIOS, *SPECIAL])}")
        assignments[int(port)] = scenario
    return assignments


if __name__ == "__main__":
    asyncio.run(serve(parse_arguments(sys.argv[1:])))
