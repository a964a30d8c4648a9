"""The collection T-SQL against the catalog of ``sys.*`` views (``supervisor/procedures/catalog.py``, from
Microsoft's documentation): every view and column each flavour's statements read exists on that flavour, in
every supported version; no column of a view that exists on a flavour is missing there, in any branch (SQL
Server compiles every branch: error 207); and the check itself tells a wrong flavour's statements.

The T-SQL is read with sqlfluff's T-SQL parser, independently of the simulator's own reading of it.
"""

from __future__ import annotations

import re
from functools import cache

import pytest
from sqlfluff.core import Linter
from sqlfluff.core.parser import BaseSegment

from supervisor.procedures import catalog, permissions, selects, tsql
from supervisor.procedures.catalog import AZURE_SQL_DATABASE, BOXED, BOXED_MAJORS, FLAVOURS, MANAGED_INSTANCE
from supervisor.procedures.resultsets import ADHOC_BATCH_MARKER

#: The versions each flavour is checked in: every supported boxed major, the versionless Azure flavours once.
VERSIONS = {BOXED: BOXED_MAJORS, MANAGED_INSTANCE: (16,), AZURE_SQL_DATABASE: (12,)}


@cache
def tree(sql: str) -> BaseSegment:
    parsed = Linter(dialect="tsql").parse_string(sql)
    assert not parsed.violations and parsed.tree is not None
    assert not list(parsed.tree.recursive_crawl("unparsable"))
    return parsed.tree


def _leaf_statements(segment: BaseSegment) -> list[BaseSegment]:
    """The statements that hold no other statement (an IF's branches are statements holding statements)."""
    found = []
    for statement in segment.recursive_crawl("statement"):
        if not any(inner is not statement for inner in statement.recursive_crawl("statement")):
            found.append(statement)
    return found


@cache
def references(sql: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(views read, ((view, column), …)) of ``sql``: the views read directly (not derived tables) and the
    qualified column references to them, each resolved through the aliases of its own statement."""
    views: list[str] = []
    columns: list[tuple[str, str]] = []
    for statement in _leaf_statements(tree(sql)):
        aliases: dict[str, str] = {}
        for element in statement.recursive_crawl("from_expression_element"):
            expression = element.get_child("table_expression")
            table = expression.get_child("table_reference") if expression else None
            if table is None:
                continue  # a derived table
            name = re.sub(r"[\[\]\s]", "", table.raw).lower()
            alias_segment = element.get_child("alias_expression")
            alias = alias_segment.raw.split()[-1].strip("[]").lower() if alias_segment else name.split(".")[-1]
            assert aliases.get(alias, name) == name, f"alias {alias} names two views in one statement"
            aliases[alias] = name
            views.append(name)
        for reference in statement.recursive_crawl("column_reference"):
            parts = [part.strip("[]").lower() for part in re.split(r"\s*\.\s*", reference.raw.split("(")[0])]
            assert len(parts) >= 2, f"unqualified column reference {reference.raw!r}: qualify it with its alias"
            if parts[0] in aliases:
                columns.append((aliases[parts[0]], parts[1]))
    return tuple(dict.fromkeys(views)), tuple(columns)


def missing_on(sql: str, flavour: str, major: int, *, columns_only: bool = False) -> list[str]:
    """What SQL Server of ``flavour``/``major`` would refuse in ``sql``: views it lacks (unless
    ``columns_only``: a branch that does not run may name them) and columns of the views it has."""
    views, columns = references(sql)
    problems = []
    for name in sorted(views):
        entry = catalog.view(name)
        if name.startswith("sys.") and (entry is None or not entry.exists(flavour, major)) and not columns_only:
            problems.append(name)
    for name, column in dict.fromkeys(columns):
        entry = catalog.view(name)
        if entry is not None and entry.exists(flavour, major) and not entry.has_column(column, flavour, major):
            problems.append(f"{name}.{column}")
    return problems


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_flavour_reads_only_what_it_has(flavour: str) -> None:
    batch = tsql.flavour_batch(flavour)
    for major in VERSIONS[flavour]:
        assert missing_on(batch, flavour, major) == [], (flavour, major)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_no_branch_names_a_column_a_view_lacks(flavour: str) -> None:
    """SQL Server compiles the whole body (every branch) before running any: a column a view lacks fails it
    with error 207 even in a branch that would not run. Missing views are fine there (deferred resolution)."""
    for major in VERSIONS[flavour]:
        assert missing_on(tsql.snapshot_batch(), flavour, major, columns_only=True) == [], (flavour, major)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_views_read_are_declared(flavour: str) -> None:
    views, _ = references(tsql.flavour_batch(flavour))
    assert set(selects.VIEWS_READ[flavour]) == set(views)


def test_the_body_runs_each_flavour_s_statements_under_its_condition() -> None:
    body = tsql.body()
    def indented(text: str) -> str:
        return "\n".join(f"    {line}" if line else "" for line in text.splitlines())

    at = {flavour: body.index(indented(tsql.flavour_statements(flavour))) for flavour in FLAVOURS}
    assert body.index("IF @engine_edition = 5\nBEGIN") < at[AZURE_SQL_DATABASE]
    assert at[AZURE_SQL_DATABASE] < body.index("ELSE IF @engine_edition = 8\nBEGIN") < at[MANAGED_INSTANCE]
    assert at[MANAGED_INSTANCE] < body.index("ELSE\nBEGIN") < at[BOXED]
    assert catalog.flavour_of(5) == AZURE_SQL_DATABASE and catalog.flavour_of(8) == MANAGED_INSTANCE
    assert {catalog.flavour_of(edition) for edition in (2, 3, 4)} == {BOXED}


@pytest.mark.parametrize(
    ("written_for", "run_on", "major", "refused"),
    [
        (AZURE_SQL_DATABASE, BOXED, 16, ["sys.dm_db_resource_stats", "sys.dm_db_wait_stats"]),
        (AZURE_SQL_DATABASE, MANAGED_INSTANCE, 16, ["sys.dm_db_resource_stats"]),
        (MANAGED_INSTANCE, BOXED, 15, ["sys.server_resource_stats"]),
        (MANAGED_INSTANCE, AZURE_SQL_DATABASE, 12, ["sys.dm_os_sys_memory", "sys.server_resource_stats"]),
        (BOXED, AZURE_SQL_DATABASE, 12, ["sys.dm_os_sys_memory"]),
    ],
)
def test_the_check_tells_a_wrong_flavour(written_for: str, run_on: str, major: int, refused: list[str]) -> None:
    assert missing_on(tsql.flavour_batch(written_for), run_on, major) == refused


def test_the_check_tells_a_wrong_version_and_a_wrong_column() -> None:
    host_info = f"{ADHOC_BATCH_MARKER}\nSELECT hi.host_platform AS p FROM sys.dm_os_host_info AS hi;"
    assert missing_on(host_info, BOXED, 13) == ["sys.dm_os_host_info"]  # SQL Server 2017 and later only
    assert missing_on(host_info, BOXED, 14) == []
    ring = "SELECT r.ring_buffer_group AS g, r.record AS x FROM sys.dm_os_ring_buffers AS r;"
    assert missing_on(ring, BOXED, 16) == ["sys.dm_os_ring_buffers.ring_buffer_group"]  # 2025 (17.x) and later
    assert missing_on(ring, BOXED, 17) == []
    typo = tsql.flavour_batch(BOXED).replace("sm.available_physical_memory_kb", "sm.available_memory_kb", 1)
    assert missing_on(typo, BOXED, 16) == ["sys.dm_os_sys_memory.available_memory_kb"]


def test_every_view_names_its_documentation_and_valid_flavours() -> None:
    scopes = {catalog.SERVER, catalog.DATABASE, catalog.DATABASE_OR_POOL_SERVER, catalog.PUBLIC}
    for name, view in catalog.VIEWS.items():
        assert name == view.name and name.startswith("sys.")
        assert view.doc.startswith("https://learn.microsoft.com/en-us/sql/relational-databases/"), name
        assert view.doc.rsplit("/", 1)[-1].startswith(name.replace(".", "-").replace("_", "-")), name
        assert view.flavours and set(view.flavours) <= set(FLAVOURS), name
        assert all(a.scope in scopes and a.denied in (catalog.ERROR, catalog.OWN_ROWS) for a in view.flavours.values())
        assert set(view.column_since) <= set(view.columns), name
        assert len(set(view.columns)) == len(view.columns), name


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_view_read_needs_a_named_permission(flavour: str) -> None:
    for major in VERSIONS[flavour]:
        needs = permissions.views_needing(flavour, major)
        assert sorted(name for names in needs.values() for name in names) == sorted(selects.VIEWS_READ[flavour])
        expected = {
            AZURE_SQL_DATABASE: permissions.VIEW_DATABASE_STATE,
            MANAGED_INSTANCE: permissions.VIEW_SERVER_PERFORMANCE_STATE,
            BOXED: permissions.VIEW_SERVER_PERFORMANCE_STATE if major >= 16 else permissions.VIEW_SERVER_STATE,
        }[flavour]
        assert set(needs) == {expected}, (flavour, major)
