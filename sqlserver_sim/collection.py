"""The collection T-SQL run as SQL Server would run it on the server's flavour (``flavours.py``).

The text (the ad-hoc batch, or the body of the deployed procedure) is parsed (``tsql_parse.py``), then, as the
engine does:

1. compile: every column of a ``sys.*`` view this server has is checked, in every branch: a missing one fails
   the whole text with error 207 and nothing runs (``CREATE PROCEDURE`` fails the same way);
2. run: ``DECLARE``s are evaluated (``SERVERPROPERTY``, literals, CAST, variables), ``IF`` conditions on them
   pick the branch, and each statement checks the views it reads: missing → 208, not permitted → 300/262 + 297;
   the text stops there, result sets already sent stay sent. ``RAISERROR`` sends its message, ``RETURN`` stops;
3. the n-th statement returning rows is the n-th contract result set; its values come from the views it reads
   (``engine.SimulatedInstance.rows``: a value whose view it does not read is NULL), and a column written
   ``CAST(NULL AS …)`` is NULL.

A marker batch that reads no ``sys.*`` view at all (a test's shorthand, ``<marker> SELECT 1``) runs the shipped
body instead. The real engine's WHERE and ORDER BY are not evaluated: waits come unfiltered (benign ones too,
so the collector's own filter is exercised), each set as the engine's model has it.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache

from sqlserver_sim import flavours
from sqlserver_sim.engine import COLUMNS, SimulatedInstance
from sqlserver_sim.statements import SessionState, StatementError, Step, error_step, evaluate, table_step
from sqlserver_sim.tokens import ResultTable
from sqlserver_sim.tsql_parse import Block, Node, Statement, parse, reads_sys_views
from supervisor.procedures import catalog
from supervisor.procedures import resultsets as contract
from supervisor.procedures.tsql import body as shipped_body

_CAST_NULL = re.compile(r"^CAST\(\s*NULL\s+AS\b", re.IGNORECASE)
_CONDITION = re.compile(r"^(?P<left>.+?)\s*(?P<op><>|!=|>=|<=|=|>|<)\s*(?P<right>.+)$", re.DOTALL)
_IN = re.compile(r"^(?P<left>.+?)\s+(?P<negate>NOT\s+)?IN\s*\((?P<values>.*)\)$", re.IGNORECASE | re.DOTALL)
_DECLARE = re.compile(r"^DECLARE\s+(@\w+)\s+[\w\s(),]+?\s*=\s*(.+)$", re.IGNORECASE | re.DOTALL)
_ASSIGNING = re.compile(r"^SELECT\s+(?:TOP\s*\(?\s*\d+\s*\)?\s+)?@\w+\s*=", re.IGNORECASE)
_RAISERROR = re.compile(r"^RAISERROR\s*\(\s*N?'((?:[^']|'')*)'\s*,\s*(\d+)", re.IGNORECASE)
_SELECT_HEAD = re.compile(r"^SELECT\s+(?:TOP\s*\(?\s*\d+\s*\)?\s+)?", re.IGNORECASE)


class _Stop(Exception):
    """The text stops (an error that ends the batch, or RETURN)."""


@dataclass
class _Run:
    instance: SimulatedInstance
    session: SessionState
    procedure: str
    now: float
    variables: dict[str, object] = field(default_factory=dict)
    #: Declared, not evaluated yet: only a variable a condition reads is evaluated (cheap on every call).
    declared: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    result_sets: int = 0


def compile_error(text: str, instance: SimulatedInstance, procedure: str = "") -> Step | None:
    """Error 207 (or a syntax error) when ``text`` cannot be compiled on this server, else None."""
    spec = instance.spec
    problem = _compile_problem(text, spec.flavour, spec.major)
    if problem is None:
        return None
    if isinstance(problem, Step):
        return problem
    return flavours.invalid_column(problem, procedure)


@lru_cache(maxsize=256)
def _compile_problem(text: str, flavour: str, major: int) -> Step | str | None:
    """A syntax error, the name of a column a view lacks on ``flavour``/``major``, or None (cached: the same
    collection text comes thousands of times)."""
    try:
        nodes = parse(text)
    except StatementError as exc:
        return exc.step
    for statement in _statements(nodes):
        aliases = {alias: view for view, alias in statement.reads}
        for alias, column in statement.columns:
            entry = catalog.view(aliases[alias])
            if entry is not None and entry.exists(flavour, major) and not entry.has_column(column, flavour, major):
                return column
    return None


def run_collection(text: str, instance: SimulatedInstance, session: SessionState, procedure: str = "") -> list[Step]:
    """The steps (result sets, errors) of running ``text``; ``procedure`` names the procedure in errors."""
    if not reads_sys_views(text):
        text = shipped_body()
    failure = compile_error(text, instance, procedure)
    if failure is not None:
        return [failure]
    run = _Run(instance, session, procedure, time.time())
    with contextlib.suppress(_Stop):
        _execute(parse(text), run)
    return run.steps


def _statements(nodes: tuple[Node, ...]) -> list[Statement]:
    found: list[Statement] = []
    for node in nodes:
        if isinstance(node, Block):
            found += _statements(node.then) + _statements(node.otherwise)
        else:
            found.append(node)
    return found


def _execute(nodes: tuple[Node, ...], run: _Run) -> None:
    for node in nodes:
        if isinstance(node, Block):
            _execute(node.then if _holds(node.condition, run) else node.otherwise, run)
        else:
            _statement(node, run)


def _holds(condition: str, run: _Run) -> bool:
    try:
        listed = _IN.match(condition)
        if listed:
            left = _value(listed.group("left"), run)
            values = [_value(item, run) for item in listed.group("values").split(",")]
            return (left in values) != bool(listed.group("negate"))
        compared = _CONDITION.match(condition)
        if compared is None:
            raise _syntax(condition)
        left, right = _value(compared.group("left"), run), _value(compared.group("right"), run)
        if left is None or right is None:
            return False  # a comparison with NULL is unknown: the ELSE runs
        operator = compared.group("op")
        if operator in ("<>", "!="):
            return left != right
        if operator == "=":
            return left == right
        return {">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right}[operator]  # type: ignore[operator]
    except StatementError as exc:
        run.steps.append(exc.step)
        raise _Stop from None


_NUMBER = re.compile(r"-?\d+")


def _value(expression: str, run: _Run) -> object:
    expression = expression.strip()
    if _NUMBER.fullmatch(expression):
        return int(expression)
    name = expression.lower()
    if name in run.declared:
        source = run.declared.pop(name)
        try:
            run.variables[name] = None if source.startswith("(") else _value(source, run)
        except StatementError:
            run.variables[name] = None
    if name in run.variables:
        return run.variables[name]
    return evaluate(expression, run.session, run.variables)[1]


def _syntax(text: str) -> StatementError:
    return StatementError(error_step(102, f"Incorrect syntax near '{text[:30]}'."))


def _statement(statement: Statement, run: _Run) -> None:
    text = statement.text
    upper = text.upper()
    if upper.startswith("RETURN"):
        raise _Stop
    raised = _RAISERROR.match(text)
    if raised:
        severity = int(raised.group(2))
        run.steps.append(error_step(50000, raised.group(1).replace("''", "'"), severity=severity,
                                    procedure=run.procedure))
        return
    own_rows = _check_views(statement, run)
    declared = _DECLARE.match(text)
    if declared:
        run.declared[declared.group(1).lower()] = declared.group(2).strip()
        return
    if upper.startswith("SELECT") and not _ASSIGNING.match(text):
        _result_set(statement, run, own_rows)


def _check_views(statement: Statement, run: _Run) -> frozenset[str]:
    """Stops the text at a view this server lacks or the login may not read; returns the views of which the
    login sees only its own rows."""
    spec = run.instance.spec
    own: set[str] = set()
    for view in statement.views:
        if flavours.view_of(spec, view) is None:
            run.steps.append(flavours.invalid_object(view, run.procedure))
            raise _Stop
        requirement = flavours.access(spec, view)
        if requirement is None:
            continue
        if flavours.sees_own_rows_only(spec, view):
            own.add(view)
            continue
        run.steps.append(flavours.permission_denied(requirement, run.session.database, run.procedure))
        raise _Stop
    return frozenset(own)


def _result_set(statement: Statement, run: _Run, own_rows: frozenset[str]) -> None:
    if run.result_sets >= len(contract.RESULT_SETS):
        run.steps.append(error_step(50000, "sqlserver-sim: the collection returns more result sets than the "
                                    "contract has", procedure=run.procedure))
        raise _Stop
    result_set = contract.RESULT_SETS[run.result_sets]
    run.result_sets += 1
    rows = run.instance.rows(result_set.name, frozenset(statement.views), run.now, run.session.database, own_rows)
    nulls = _null_columns(statement.text)
    values = [[None if name in nulls else row[name] for name in result_set.column_names] for row in rows]
    run.steps.append(table_step(ResultTable(COLUMNS[result_set.name], values)))


@lru_cache(maxsize=256)
def _null_columns(text: str) -> frozenset[str]:
    """Aliases of the select-list items written ``CAST(NULL AS …) AS alias``."""
    head = _SELECT_HEAD.match(text)
    if head is None:
        return frozenset()
    items: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    rest = text[head.end():]
    for index, char in enumerate(rest):
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        if not quoted and depth == 0 and re.match(r"\sFROM\b", rest[index:index + 6], re.IGNORECASE):
            break
        if char == "," and depth == 0 and not quoted:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    nulls = set()
    for item in items:
        alias = re.search(r"\s+AS\s+\[?(\w+)\]?$", item, re.IGNORECASE)
        if alias and _CAST_NULL.match(item):
            nulls.add(alias.group(1).lower())
    return frozenset(nulls)
