"""The collection T-SQL: it parses (sqlfluff, tsql dialect) and it returns exactly the contract."""

from __future__ import annotations

import re
import textwrap
from functools import cache

import pytest
from sqlfluff.core import Linter
from sqlfluff.core.parser import BaseSegment

from supervisor.procedures import selects, tsql
from supervisor.procedures.benign_waits import benign_wait_types
from supervisor.procedures.catalog import FLAVOURS
from supervisor.procedures.resultsets import (
    ADHOC_BATCH_MARKER,
    CONTRACT_VERSION,
    INSTANCE,
    PROCEDURE_QUALIFIED_NAME,
    RESULT_SETS,
    Column,
    ResultSet,
    SqlType,
)

_EXEC_STRING = re.compile(r"EXEC\s*\(\s*N'((?:[^']|'')*)'\s*\)", re.IGNORECASE)


@cache
def _linter() -> Linter:
    return Linter(dialect="tsql")


@cache
def _parse(sql: str) -> BaseSegment:
    """Parse tree of *sql*; AssertionError when any part of it does not parse."""
    parsed = _linter().parse_string(sql)
    assert not parsed.violations, f"parse violations: {parsed.violations}"
    assert parsed.tree is not None
    unparsable = [seg.raw for seg in parsed.tree.recursive_crawl("unparsable")]
    assert not unparsable, f"unparsable sections: {unparsable}"
    return parsed.tree


def _exec_strings(sql: str) -> list[str]:
    """The T-SQL inside EXEC (N'...') calls, quotes undoubled."""
    return [match.group(1).replace("''", "'") for match in _EXEC_STRING.finditer(sql)]


def _shipped_texts() -> dict[str, str]:
    texts = {"snapshot_batch": tsql.snapshot_batch(), "body": tsql.body()}
    texts.update({f"flavour_batch_{flavour}": tsql.flavour_batch(flavour) for flavour in FLAVOURS})
    for i, batch in enumerate(tsql.install_batches()):
        texts[f"install_batch_{i}"] = batch
        for j, inner in enumerate(_exec_strings(batch)):
            texts[f"install_batch_{i}_exec_{j}"] = inner
    return texts


def _result_set_selects(tree: BaseSegment) -> list[BaseSegment]:
    """SELECT statements that stand as statements (not subqueries): the result sets, in order."""
    return [
        child
        for statement in tree.recursive_crawl("statement")
        for child in statement.segments
        if child.is_type("select_statement")
    ]


def _select_elements(select: BaseSegment) -> list[BaseSegment]:
    clause = next(seg for seg in select.segments if seg.is_type("select_clause"))
    return [seg for seg in clause.segments if seg.is_type("select_clause_element")]


def _alias(element: BaseSegment) -> str | None:
    alias = next((seg for seg in element.segments if seg.is_type("alias_expression")), None)
    if alias is None:
        return None
    identifier = next(alias.recursive_crawl("naked_identifier", "quoted_identifier"))
    return identifier.raw.strip('[]"')


def _cast_type(element: BaseSegment) -> str | None:
    """'int', 'nvarchar(128)', ... when the element is CAST(... AS type) AS alias, else None."""
    function = next((seg for seg in element.segments if seg.is_type("function")), None)
    if function is None or function.get_child("function_name").raw.upper() != "CAST":
        return None
    bracketed = function.get_child("function_contents").get_child("bracketed")
    data_type = bracketed.get_child("data_type")
    return re.sub(r"\s+", "", data_type.raw).lower() if data_type else None


def _contract_type(column: Column) -> str:
    if column.sql_type is SqlType.NVARCHAR:
        return f"nvarchar({column.length})"
    if column.sql_type is SqlType.DATETIME2:
        return "datetime2(7)"
    return column.sql_type.value


#: The body: the instance set, then each flavour's branch (Azure SQL Database, Managed Instance, boxed) with
#: result sets 2-4; a flavour-only batch: the four sets once.
_BODY_ORDER: tuple[ResultSet, ...] = (INSTANCE, *RESULT_SETS[1:] * len(FLAVOURS))


def _result_set_texts() -> dict[str, tuple[str, tuple[ResultSet, ...]]]:
    texts = {
        "snapshot_batch": (tsql.snapshot_batch(), _BODY_ORDER),
        "procedure": (tsql.install_batches()[-1], _BODY_ORDER),
    }
    texts.update({flavour: (tsql.flavour_batch(flavour), RESULT_SETS) for flavour in FLAVOURS})
    return texts


# --- (1) everything shipped parses -----------------------------------------------------------


@pytest.mark.parametrize("name", list(_shipped_texts()))
def test_shipped_tsql_parses_with_sqlfluff(name: str) -> None:
    _parse(_shipped_texts()[name])


def test_install_batches_wrap_nothing_but_create_schema() -> None:
    inner = [text for batch in tsql.install_batches() for text in _exec_strings(batch)]
    assert inner == ["CREATE SCHEMA collector"]


@pytest.mark.parametrize(
    "broken",
    [
        # the real batch with one closing parenthesis removed
        tsql.snapshot_batch().replace(f"CAST({CONTRACT_VERSION} AS int)", f"CAST({CONTRACT_VERSION} AS int", 1),
        # the real batch with a dangling comma in a select list
        tsql.snapshot_batch().replace("AS contract_version,", "AS contract_version,,", 1),
        "SELECT a, FROM t;",
        "SELECT CAST(x AS int AS y FROM t;",
    ],
    ids=["missing-paren", "double-comma", "trailing-comma", "unclosed-cast"],
)
def test_parse_check_fails_on_broken_tsql(broken: str) -> None:
    with pytest.raises(AssertionError):
        _parse(broken)


# --- (2) result sets: names, order, types ----------------------------------------------------


@pytest.mark.parametrize("name", list(_result_set_texts()))
def test_result_set_aliases_match_contract(name: str) -> None:
    text, expected = _result_set_texts()[name]
    found = _result_set_selects(_parse(text))
    aliases = [tuple(_alias(el) for el in _select_elements(sel)) for sel in found]
    assert aliases == [rs.column_names for rs in expected]


@pytest.mark.parametrize("name", list(_result_set_texts()))
def test_every_column_is_cast_to_contract_type(name: str) -> None:
    text, expected = _result_set_texts()[name]
    found = _result_set_selects(_parse(text))
    assert len(found) == len(expected)
    for select, result_set in zip(found, expected, strict=True):
        got = [_cast_type(el) for el in _select_elements(select)]
        assert got == [_contract_type(col) for col in result_set.columns], result_set.name


def test_null_only_where_the_contract_allows_it() -> None:
    for flavour in FLAVOURS:
        found = _result_set_selects(_parse(tsql.flavour_batch(flavour)))
        for select, result_set in zip(found, RESULT_SETS, strict=True):
            for element, column in zip(_select_elements(select), result_set.columns, strict=True):
                if re.match(r"CAST\(NULL AS", element.raw):
                    assert column.nullable, (flavour, column.name)


def test_contract_version_literal() -> None:
    instance = _result_set_selects(_parse(tsql.snapshot_batch()))[0]
    first = _select_elements(instance)[0]
    assert first.raw == f"CAST({CONTRACT_VERSION} AS int) AS contract_version"


def test_sample_time_and_flavour_taken_once() -> None:
    assert tsql.body().count("SYSUTCDATETIME()") == 1
    assert tsql.body().count("SERVERPROPERTY(N'EngineEdition')") == 1
    assert tsql.body().index("SYSUTCDATETIME()") < tsql.body().index("IF @engine_edition")


def test_session_settings_come_first() -> None:
    statements = [line for line in tsql.body().splitlines() if line and not line.startswith("--")]
    assert statements[:4] == [
        "SET NOCOUNT ON;",
        "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED;",
        "SET DEADLOCK_PRIORITY LOW;",
        "SET ARITHABORT ON;",
    ]


def test_object_name_never_compared_with_equality() -> None:
    assert "[object_name]" in tsql.body()
    assert not re.search(r"object_name\]?\)?\s*=", tsql.body())


# --- (3) benign waits -----------------------------------------------------------------------


def _not_in_wait_types(sql: str) -> list[str]:
    match = re.search(r"wait_type NOT IN \((.*?)\)", sql, re.DOTALL)
    assert match, "no NOT IN list on wait_type"
    return re.findall(r"N'([^']*)'", match.group(1))


def test_benign_wait_names_are_safe_to_render() -> None:
    names = benign_wait_types()
    assert names
    assert all(re.fullmatch(r"[A-Z0-9_]+", name) for name in names)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_benign_wait_is_excluded_sorted(flavour: str) -> None:
    rendered = _not_in_wait_types(tsql.flavour_batch(flavour))
    assert set(rendered) == benign_wait_types()
    assert rendered == sorted(rendered)
    assert len(rendered) == len(set(rendered))


def test_zero_count_waits_are_excluded() -> None:
    assert tsql.body().count("ws.waiting_tasks_count <> 0") == len(FLAVOURS)


@pytest.mark.parametrize("bad", ["X'); DROP TABLE t; --", "lower_case", "WITH SPACE", ""])
def test_unsafe_wait_name_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setattr(selects, "benign_wait_types", lambda: frozenset({"CXPACKET", bad}))
    with pytest.raises(ValueError):
        tsql.benign_wait_list_sql()


# --- (4) batch, procedure, calls ------------------------------------------------------------


def test_marker_is_first_line_of_batch() -> None:
    assert ADHOC_BATCH_MARKER.startswith("--")
    assert tsql.snapshot_batch().splitlines()[0] == ADHOC_BATCH_MARKER


def test_no_go_separator_in_anything_sent_over_odbc() -> None:
    for text in [tsql.snapshot_batch(), *tsql.install_batches()]:
        assert not re.search(r"^\s*GO\s*$", text, re.MULTILINE | re.IGNORECASE)


def test_procedure_batch_starts_with_create_and_shares_the_body() -> None:
    schema_batch, procedure_batch = tsql.install_batches()
    assert "IF SCHEMA_ID(N'collector') IS NULL" in schema_batch
    head, _, rest = procedure_batch.partition("\nBEGIN\n")
    assert head == f"CREATE OR ALTER PROCEDURE {PROCEDURE_QUALIFIED_NAME}\nAS"
    inner, _, tail = rest.rpartition("\nEND;")
    assert textwrap.dedent(inner) + "\n" == tsql.body()
    assert tail.strip() == ""


def test_install_script_is_batches_joined_with_go() -> None:
    script = tsql.install_script()
    parts = re.split(r"^GO$", script, flags=re.MULTILINE)
    assert [p.strip() for p in parts if p.strip()] == [b.strip() for b in tsql.install_batches()]
    assert "VIEW SERVER STATE" in script
    assert "VIEW SERVER PERFORMANCE STATE" in script
    assert "VIEW DATABASE STATE" in script
    assert not re.search(r"^\s*GRANT\b", script, re.MULTILINE | re.IGNORECASE)  # no permission is granted here


def test_exec_statements() -> None:
    assert tsql.exec_statement() == "{CALL collector.usp_collect_snapshot}"
    assert tsql.exec_batch() == "EXEC collector.usp_collect_snapshot;"
    _parse(tsql.exec_batch())
