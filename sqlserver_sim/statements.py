"""Answers to the plain T-SQL statements drivers and SQLAlchemy send on their own.

Only what clients really send is understood: SET/USE/transaction statements, SELECT lists of
literals, @@variables, SERVERPROPERTY() and a few built-ins, and the SQLAlchemy dialect's probes.
Anything reading an unknown object gets SQL Server's error 208, unknown syntax error 102.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field

from sqlserver_sim.fleet import ServerSpec
from sqlserver_sim.tokens import (
    CMD_SELECT,
    DONE_COUNT,
    DONE_ERROR,
    ENV_DATABASE,
    ColumnDef,
    Kind,
    ResultTable,
    envchange_text,
    error,
    info,
)

_PRODUCT_YEARS = {11: "2012", 12: "2014", 13: "2016", 14: "2017", 15: "2019", 16: "2022", 17: "2025"}


@dataclass
class Step:
    """The tokens of one statement and the DONE that closes it."""

    tokens: bytes = b""
    status: int = 0
    cur_cmd: int = 0
    row_count: int = 0


@dataclass
class SessionState:
    spec: ServerSpec
    user: str
    spid: int
    database: str = "master"
    transaction: int = 0  # current transaction descriptor, 0 = none
    prepared: dict[int, str] = field(default_factory=dict)
    next_handle: int = 1


def error_step(number: int, text: str, severity: int = 16, state: int = 1, procedure: str = "") -> Step:
    return Step(error(number, text, severity, state=state, procedure=procedure), DONE_ERROR)


def table_step(table: ResultTable) -> Step:
    return Step(table.encode(), DONE_COUNT, CMD_SELECT, len(table.rows))


def version_text(spec: ServerSpec) -> str:
    major = spec.version_tuple[0]
    year = _PRODUCT_YEARS.get(major, "")
    platform = ("Linux (Ubuntu 22.04.4 LTS) <X64>" if spec.host_platform == "Linux"
                else "Windows Server 2022 Standard 10.0 <X64> (Build 20348: ) (Hypervisor)")
    return (f"Microsoft SQL Server {year} (RTM) - {spec.version} (X64) \n\tJan  1 2024 00:00:00 \n"
            f"\tCopyright (C) {year} Microsoft Corporation\n\t{spec.edition} on {platform}\n")


def server_property(spec: ServerSpec, name: str) -> tuple[Kind, object]:
    major, minor, build = spec.version_tuple
    values: dict[str, tuple[Kind, object]] = {
        "productversion": (Kind.NVARCHAR, spec.version),
        "productlevel": (Kind.NVARCHAR, "RTM"),
        "productmajorversion": (Kind.NVARCHAR, str(major)),
        "productminorversion": (Kind.NVARCHAR, str(minor)),
        "productbuild": (Kind.NVARCHAR, str(build)),
        "edition": (Kind.NVARCHAR, spec.edition),
        "engineedition": (Kind.INT, spec.effective_engine_edition),
        "machinename": (Kind.NVARCHAR, spec.name),
        "servername": (Kind.NVARCHAR, spec.name),
        "instancename": (Kind.NVARCHAR, None),
        "collation": (Kind.NVARCHAR, "SQL_Latin1_General_CP1_CI_AS"),
        "isclustered": (Kind.INT, 0),
        "ishadrenabled": (Kind.INT, 0),
        "isintegratedsecurityonly": (Kind.INT, 0),
    }
    return values.get(name.lower(), (Kind.NVARCHAR, None))


_SPLIT_SELECT = re.compile(r"^\s*select\s+(?:top\s*\(?\s*\d+\s*\)?\s+)?(?P<list>.*?)\s*;?\s*$",
                           re.IGNORECASE | re.DOTALL)
_FROM = re.compile(r"\bfrom\s+(?P<object>(?:\[[^\]]+\]|[\w#@$]+)(?:\s*\.\s*(?:\[[^\]]+\]|[\w#@$]+))*)",
                   re.IGNORECASE)
_ALIAS = re.compile(r"^(?P<expr>.+?)\s+(?:as\s+)?(?P<alias>\[[^\]]+\]|\"[^\"]+\"|'[^']+'|\w+)$",
                    re.IGNORECASE | re.DOTALL)
_STRING = re.compile(r"^N?'((?:[^']|'')*)'$", re.IGNORECASE | re.DOTALL)
_CAST = re.compile(r"^(?:cast|try_cast)\s*\((?P<inner>.+)\s+as\s+"
                   r"(?P<type>[\w ]+(?:\(\s*(?:max|\d+(?:\s*,\s*\d+)?)\s*\))?)\s*\)$", re.IGNORECASE | re.DOTALL)
_SERVERPROPERTY = re.compile(r"^serverproperty\s*\(\s*N?'(?P<name>\w+)'\s*\)$", re.IGNORECASE)


class StatementError(Exception):
    def __init__(self, step: Step) -> None:
        super().__init__("statement failed")
        self.step = step


def split_statements(text: str) -> list[str]:
    """Split on top-level ';' and on line starts of SET sequences (pymssql sends those one per line); a ';' in a
    ``--`` comment splits nothing."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    commented = False
    for char in text:
        if char == "\n":
            commented = False
        elif char == "'" and not commented:
            quoted = not quoted
        elif char == "-" and not quoted and current and current[-1] == "-":
            commented = True
        if char == ";" and not quoted and not commented:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    statements: list[str] = []
    for piece in pieces:
        lines = [line.strip() for line in piece.splitlines() if line.strip() and not line.strip().startswith("--")]
        if lines and all(line.lower().startswith("set ") for line in lines):
            statements.extend(lines)
        elif lines:
            statements.append("\n".join(lines))
    return statements


def answer_statement(text: str, session: SessionState, variables: dict[str, object] | None = None) -> Step:
    words = text.split(None, 2)
    first = words[0].lower() if words else ""
    if first in ("set", "declare", "print", "raiserror"):
        return Step()
    if first in ("begin", "commit", "rollback", "save") or text.lower().startswith("if @@trancount"):
        return Step()
    if first == "use" and len(words) > 1:
        database = words[1].strip("[];")
        old, session.database = session.database, database
        return Step(envchange_text(ENV_DATABASE, database, old)
                    + info(5701, f"Changed database context to '{database}'.", state=2))
    if first == "if" and "create schema" in text.lower():  # the deploy script's first batch
        return Step()
    if first == "select":
        try:
            return answer_select(text, session, variables or {})
        except StatementError as exc:
            return exc.step
    return error_step(102, f"Incorrect syntax near '{words[0] if words else text}'.", state=1)


def answer_select(text: str, session: SessionState, variables: dict[str, object]) -> Step:
    lowered = text.lower()
    source = _FROM.search(_without_strings(text))
    if source:
        return _answer_select_from(source.group("object"), lowered, session)
    match = _SPLIT_SELECT.match(text)
    if not match:
        raise StatementError(error_step(102, "Incorrect syntax near 'select'."))
    columns: list[ColumnDef] = []
    values: list[object] = []
    for item in _split_list(match.group("list")):
        name, kind, value, length = _evaluate_item(item, session, variables)
        columns.append(ColumnDef(name, kind, True, length))
        values.append(value)
    return table_step(ResultTable(columns, [values]))


def _answer_select_from(source: str, lowered: str, session: SessionState) -> Step:
    plain = source.replace("[", "").replace("]", "").replace(" ", "").lower()
    if plain.endswith("system_views"):
        column = ColumnDef("name", Kind.NVARCHAR, False, 128)
        return table_step(ResultTable([column], [["dm_exec_sessions"]]))
    if plain.endswith("dm_exec_sessions") and "transaction_isolation_level" in lowered:
        column = ColumnDef("TRANSACTION_ISOLATION_LEVEL", Kind.NVARCHAR, True, 16)
        return table_step(ResultTable([column], [["READ COMMITTED"]]))
    if "fn_listextendedproperty" in lowered:
        columns = [ColumnDef(n, Kind.NVARCHAR, True, 128) for n in ("objtype", "objname", "name", "value")]
        return table_step(ResultTable(columns, []))
    return error_step(208, f"Invalid object name '{source.replace('[', '').replace(']', '')}'.")


def _without_strings(text: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", text)


def _split_list(select_list: str) -> list[str]:
    items: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in select_list:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _evaluate_item(item: str, session: SessionState, variables: dict[str, object]) -> tuple[str, Kind, object, int]:
    name = ""
    expression = item
    if not (_STRING.match(item) or _CAST.match(item)):
        alias = _ALIAS.match(item)
        if alias and not alias.group("expr").rstrip().endswith(("(", ",")):
            expression = alias.group("expr").strip()
            name = alias.group("alias").strip("[]\"'")
    else:
        alias = re.match(r"^(?P<expr>.+\))\s+(?:as\s+)?(?P<alias>\w+)$", item, re.IGNORECASE | re.DOTALL)
        if alias and _CAST.match(alias.group("expr")):
            expression, name = alias.group("expr"), alias.group("alias")
    kind, value, length = evaluate(expression.strip(), session, variables)
    return name, kind, value, length


def evaluate(expression: str, session: SessionState, variables: dict[str, object]) -> tuple[Kind, object, int]:
    """Value of a scalar expression as (kind, value, nvarchar length; 0 = max)."""
    spec = session.spec
    lowered = expression.lower()
    if re.fullmatch(r"-?\d+", expression):
        number = int(expression)
        return (Kind.INT if -2**31 <= number < 2**31 else Kind.BIGINT), number, 0
    string = _STRING.match(expression)
    if string:
        text = string.group(1).replace("''", "'")
        return Kind.NVARCHAR, text, max(1, len(text))
    if lowered == "null":
        return Kind.INT, None, 0
    cast = _CAST.match(expression)
    if cast:
        kind, value, length = evaluate(cast.group("inner").strip(), session, variables)
        target = cast.group("type").lower().replace(" ", "")
        if "char" in target:
            return Kind.NVARCHAR, None if value is None else str(value), 0 if "max" in target else 4000
        return kind, value, length
    property_call = _SERVERPROPERTY.match(expression)
    if property_call:
        kind, value = server_property(spec, property_call.group("name"))
        return kind, value, 128
    if lowered.startswith("@@"):
        return _global_variable(lowered, session)
    if lowered.startswith("@") and lowered in variables:
        return _python_value(variables[lowered])
    builtins: dict[str, tuple[Kind, object, int]] = {
        "schema_name()": (Kind.NVARCHAR, "dbo", 128),
        "db_name()": (Kind.NVARCHAR, session.database, 128),
        "user_name()": (Kind.NVARCHAR, "dbo", 128),
        "suser_name()": (Kind.NVARCHAR, session.user, 128),
        "suser_sname()": (Kind.NVARCHAR, session.user, 128),
        "system_user": (Kind.NVARCHAR, session.user, 128),
        "current_user": (Kind.NVARCHAR, "dbo", 128),
        "sysutcdatetime()": (Kind.DATETIME2, _utcnow(), 0),
        "getutcdate()": (Kind.DATETIME2, _utcnow(), 0),
        "sysdatetime()": (Kind.DATETIME2, _localnow(spec), 0),
        "getdate()": (Kind.DATETIME2, _localnow(spec), 0),
        "current_timestamp": (Kind.DATETIME2, _localnow(spec), 0),
        "is_srvrolemember('sysadmin')": (Kind.INT, 0, 0),
    }
    key = re.sub(r"\s+", "", lowered).replace("n'", "'")
    if key in builtins:
        return builtins[key]
    raise StatementError(error_step(207, f"Invalid column name '{expression}'."))


def _global_variable(name: str, session: SessionState) -> tuple[Kind, object, int]:
    spec = session.spec
    values: dict[str, tuple[Kind, object, int]] = {
        "@@version": (Kind.NVARCHAR, version_text(spec), 300),
        "@@servername": (Kind.NVARCHAR, spec.name, 128),
        "@@servicename": (Kind.NVARCHAR, "MSSQLSERVER", 128),
        "@@spid": (Kind.SMALLINT, session.spid, 0),
        "@@trancount": (Kind.INT, 1 if session.transaction else 0, 0),
        "@@language": (Kind.NVARCHAR, "us_english", 128),
        "@@langid": (Kind.SMALLINT, 0, 0),
        "@@max_precision": (Kind.TINYINT, 38, 0),
        "@@textsize": (Kind.INT, 2147483647, 0),
        "@@datefirst": (Kind.TINYINT, 7, 0),
        "@@lock_timeout": (Kind.INT, -1, 0),
        "@@microsoftversion": (Kind.INT, _microsoft_version(spec), 0),
        "@@options": (Kind.INT, 5496, 0),
        "@@rowcount": (Kind.INT, 0, 0),
        "@@error": (Kind.INT, 0, 0),
    }
    if name in values:
        return values[name]
    raise StatementError(error_step(137, f"Must declare the scalar variable \"{name}\"."))


def _microsoft_version(spec: ServerSpec) -> int:
    major, minor, build = spec.version_tuple
    return (major << 24) | (minor << 16) | build


def _python_value(value: object) -> tuple[Kind, object, int]:
    if isinstance(value, bool):
        return Kind.BIT, value, 0
    if isinstance(value, int):
        return (Kind.INT if -2**31 <= value < 2**31 else Kind.BIGINT), value, 0
    if isinstance(value, float):
        return Kind.FLOAT, value, 0
    if isinstance(value, dt.datetime):
        return Kind.DATETIME2, value, 0
    if value is None:
        return Kind.INT, None, 0
    text = str(value)
    return Kind.NVARCHAR, text, max(1, min(len(text), 4000)) if len(text) <= 4000 else 0


def _utcnow() -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time(), dt.UTC).replace(tzinfo=None)


def _localnow(spec: ServerSpec) -> dt.datetime:
    return _utcnow() + dt.timedelta(minutes=spec.timezone_offset_minutes)
