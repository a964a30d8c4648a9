"""A TDS server whose answers pass every column check but hold figures no server can have: non-ASCII wait type
names (one that ``str.upper()`` makes 120 characters long), a wait row with a NULL counter, a CPU record six
hours old, more memory available than there is, SQL Server memory beyond the host's. The counters grow with the
port's collection count (across connections, so each ``collect-once`` sees new increments).

``python -m tests.sim.implausible_server PORT ...``: one line ``{"event": "ready"}`` on stdout once it listens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sys
from typing import Any

from sqlserver_sim import tokens
from supervisor.procedures.resultsets import RESULT_SETS
from tests.sim import hostile_server
from tests.sim.hostile_server import columns, plain_values, result_set, wait_row

#: (name, count per collection): the names as sent; wait_time_ms is 100 times the count, signal 0.
WAIT_NAMES = (("ß" * 60, 1), ("Straße", 2), ("ЛОК_ОЖИДАНИЕ", 3), ("lck_m_x", 4))
NULL_COUNTER_WAIT = "WRITELOG"
GB_KB = 1 << 20
_collections: dict[int, int] = {}


def implausible_values(n: int) -> dict[str, list[dict[str, Any]]]:
    values = plain_values(n)
    values["cpu"][0].update(record_time_utc=values["instance"][0]["sample_time_utc"] - dt.timedelta(hours=6),
                            sql_cpu_percent=97)  # fmt: skip
    values["counters"][0].update(total_physical_memory_kb=16 * GB_KB, available_physical_memory_kb=32 * GB_KB,
                                 total_server_memory_kb=64 << 30)  # fmt: skip
    values["waits"] = [wait_row(name, per * n, 100 * per * n, 0) for name, per in WAIT_NAMES]
    values["waits"].append(wait_row(NULL_COUNTER_WAIT, 5 * n, None, 0))
    return values


class ImplausibleSession(hostile_server.Session):
    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__("good", reader, writer)
        self.port = port

    async def _collection(self) -> None:
        _collections[self.port] = n = _collections.get(self.port, 0) + 1
        values = implausible_values(n)
        sets = b"".join(result_set(columns(spec.name, {}), values[spec.name]) for spec in RESULT_SETS)
        await self.send(sets + tokens.done(tokens.DONE_FINAL, tokens.CMD_SELECT))


async def serve(ports: list[int]) -> None:
    for port in ports:

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port) -> None:
            await ImplausibleSession(port, reader, writer).run()

        await asyncio.start_server(handle, "127.0.0.1", port)
    stop = asyncio.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signo, stop.set)
    print(json.dumps({"event": "ready"}), flush=True)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve([int(port) for port in sys.argv[1:]]))
