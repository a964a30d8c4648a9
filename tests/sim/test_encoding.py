"""Pure encoders and decoders: no sockets, no drivers."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from sqlserver_sim import login, packets, rpc, tokens
from sqlserver_sim.engine import SimulatedInstance
from sqlserver_sim.fleet import FleetError, ServerSpec, parse_fleet
from sqlserver_sim.requests import procedure_key
from sqlserver_sim.statements import split_statements


def test_datetime2_known_bytes() -> None:
    # midnight of day 0 (0001-01-01): all eight bytes zero
    assert tokens.encode_datetime2(dt.datetime(1, 1, 1, 0, 0, 0)) == bytes(8)
    value = dt.datetime(2024, 3, 5, 12, 34, 56, 789012)
    encoded = tokens.encode_datetime2(value)
    ticks = int.from_bytes(encoded[:5], "little")
    days = int.from_bytes(encoded[5:], "little")
    assert ticks == (12 * 3600 + 34 * 60 + 56) * 10_000_000 + 7_890_120
    assert days == (value.date() - dt.date(1, 1, 1)).days
    assert tokens.decode_datetime2(encoded) == value


def test_datetime2_row_value_has_length_prefix_and_nulls() -> None:
    column = tokens.ColumnDef("t", tokens.Kind.DATETIME2)
    assert column.type_info == b"\x2a\x07"
    assert column.encode_value(dt.datetime(2000, 1, 1))[0] == 8
    assert column.encode_value(None) == b"\x00"


def test_password_scrambling_round_trip() -> None:
    # 'a' = 0x61 0x00 -> swap nibbles 0x16 0x00 -> XOR 0xA5 -> 0xB3 0xA5
    assert login.encode_password("a") == b"\xb3\xa5"
    assert login.decode_password(b"\xb3\xa5") == "a"
    assert login.decode_password(login.encode_password("Pässwörd!1")) == "Pässwörd!1"


def test_packets_split_with_eom_on_last_only() -> None:
    payload = bytes(range(256)) * 40  # 10,240 bytes
    framed = packets.encode_packets(packets.TABULAR_RESULT, payload, 4096)
    position, body, statuses = 0, b"", []
    while position < len(framed):
        packet_type, status, length = packets.decode_header(framed[position:position + 8])
        assert packet_type == packets.TABULAR_RESULT and length <= 4096
        statuses.append(status)
        body += framed[position + 8:position + length]
        position += length
    assert body == payload
    assert statuses == [0, 0, packets.STATUS_EOM]
    assert framed[6] == 1 and framed[4096 + 6] == 2  # packet ids count up


def test_parse_messages_waits_for_eom() -> None:
    framed = packets.encode_packets(packets.SQL_BATCH, b"x" * 5000, 4096)
    buffer = bytearray(framed[:4096])
    assert packets.parse_messages(buffer) == []
    buffer += framed[4096:]
    (message,) = packets.parse_messages(buffer)
    assert message.payload == b"x" * 5000 and not buffer


def test_prelogin_response_layout() -> None:
    response = login.build_prelogin_response((16, 0, 4135), login.ENCRYPT_NOT_SUP)
    options = login.parse_prelogin(response)
    assert options[login.PL_ENCRYPTION] == b"\x02"
    assert options[login.PL_VERSION] == bytes((16, 0)) + struct.pack(">HH", 4135, 0)


def test_rpc_parsing_of_sp_executesql() -> None:
    text = "SELECT @P1".encode("utf-16-le")
    payload = (struct.pack("<IIHQI", 22, 18, 2, 0, 1) + b"\xff\xff" + struct.pack("<HH", 10, 0)
               + b"\x00\x00\xe7" + struct.pack("<H", 8000) + tokens.COLLATION + struct.pack("<H", len(text)) + text
               + tokens.b_varchar("@P1") + b"\x00\x26\x04\x04" + struct.pack("<i", 7))
    (call,) = rpc.parse_rpc(payload)
    assert call.name == "sp_executesql"
    assert call.params == [("", "SELECT @P1"), ("@P1", 7)]


def test_procedure_names_are_normalised() -> None:
    assert procedure_key("[collector].[usp_collect_snapshot]") == "collector.usp_collect_snapshot"
    assert procedure_key("master.collector.usp_collect_snapshot") == "collector.usp_collect_snapshot"
    assert procedure_key("[sys].sp_datatype_info_100") == "sp_datatype_info_100"


def test_split_statements() -> None:
    assert split_statements("SET A ON\nSET B OFF") == ["SET A ON", "SET B OFF"]
    assert split_statements("SELECT 'a;b'; SELECT 2;") == ["SELECT 'a;b'", "SELECT 2"]


def test_engine_counter_is_linear_and_restart_resets() -> None:
    spec = ServerSpec("x", 1)
    instance = SimulatedInstance(spec, now=1_000_000.0)
    assert instance.batch_requests_total(1_000_010.0) - instance.batch_requests_total(1_000_000.0) == 5000
    instance.restart(now=2_000_000.0)
    assert instance.batch_requests_total(2_000_001.0) == 500


@pytest.mark.parametrize(("document", "field"), [
    ({"servers": [{"port": 1}]}, "servers[0].name"),
    ({"servers": [{"name": "a", "port": 70000}]}, "servers[0].port"),
    ({"servers": [{"name": "a", "port": 1, "faults": {"slow_query_ms": -1}}]}, "servers[0].faults.slow_query_ms"),
    ({"servers": [{"name": "a", "port": 1, "colour": "red"}]}, "servers[0].colour"),
    ({"servers": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}, "servers[1].name"),
    ({"servers": [{"name": "a", "port": 1}, {"name": "b", "port": 1}]}, "servers[1].port"),
    ({"defaults": {"profile": {"memory_used_percent": [10, 120]}}, "servers": [{"name": "a", "port": 1}]},
     "servers[0].profile.memory_used_percent"),
])
def test_fleet_errors_name_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(FleetError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_fleet(document)


def test_fleet_defaults_merge_and_restart_true_counts_as_one() -> None:
    fleet = parse_fleet({
        "host": "127.0.0.2",
        "defaults": {"user": "u", "profile": {"cpu_percent": [1, 2]}, "faults": {"slow_login_ms": 5}},
        "servers": [{"name": "a", "port": 1, "profile": {"cpu_count": 4}, "faults": {"restart": True}}],
    })
    (spec,) = fleet.servers
    assert (spec.host, spec.user, spec.profile.cpu_percent, spec.profile.cpu_count) == ("127.0.0.2", "u", (1, 2), 4)
    assert (spec.faults.slow_login_ms, spec.faults.restart) == (5, 1)
