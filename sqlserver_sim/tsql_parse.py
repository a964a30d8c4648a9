"""Parsing the collection T-SQL (for ``collection.py``): statements, the ``sys.*`` views each reads with the
columns it names, and ``IF <condition> BEGIN … END [ELSE IF … | ELSE BEGIN … END]`` blocks, their keywords on
lines of their own (as ``supervisor/procedures/tsql.py`` writes them). Statements end at top-level semicolons.
Columns of a view count only when qualified by its alias (``si.cpu_count``), which the shipped T-SQL always does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from sqlserver_sim.statements import StatementError, error_step

_STRING = re.compile(r"N?'(?:[^']|'')*'", re.IGNORECASE)
_OBJECT = re.compile(
    r"\b(?:FROM|JOIN|APPLY)\s+((?:\[?\w+\]?\s*\.\s*)?\[?sys\]?\s*\.\s*\[?\w+\]?)(?:\s+(?:AS\s+)?(\w+))?",
    re.IGNORECASE,
)
_COLUMN = re.compile(r"\b(\w+)\s*\.\s*\[?(\w+)\]?")
_NOT_ALIASES = {"where", "order", "group", "cross", "outer", "inner", "left", "right", "join", "on", "with",
                "option", "union", "having"}  # fmt: skip


@dataclass(frozen=True)
class Statement:
    text: str  # without comments
    reads: tuple[tuple[str, str], ...]  # (view, alias)
    columns: tuple[tuple[str, str], ...]  # (alias, column)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(view for view, _ in self.reads))


@dataclass(frozen=True)
class Block:
    condition: str
    then: tuple[Node, ...]
    otherwise: tuple[Node, ...] = ()


Node = Statement | Block


@lru_cache(maxsize=64)
def reads_sys_views(text: str) -> bool:
    return bool(_OBJECT.search(_STRING.sub("''", _strip_comments(text))))


@lru_cache(maxsize=64)
def parse(text: str) -> tuple[Node, ...]:
    items: list[tuple[str, str]] = []
    pending: list[str] = []
    for line in _strip_comments(text).splitlines():
        stripped = line.strip()
        upper = stripped.upper().rstrip(";")
        control = upper in ("BEGIN", "END", "ELSE") or upper.startswith(("IF ", "ELSE IF "))
        if control and not "".join(pending).strip():
            if upper.startswith("ELSE IF "):
                items += [("ELSE", ""), ("IF", stripped[5:].strip()[3:])]
            elif upper.startswith("IF "):
                items.append(("IF", stripped[3:]))
            else:
                items.append((upper, ""))
            continue
        pending.append(line)
        text_so_far = "\n".join(pending)
        *complete, rest = _split_top_level(text_so_far)
        items += [("STATEMENT", piece) for piece in complete if piece.strip()]
        pending = [rest] if rest.strip() else []
    if "".join(pending).strip():
        items.append(("STATEMENT", "\n".join(pending)))
    nodes, _end = _block(items, 0, until_end=False)
    return tuple(nodes)


def _block(items: list[tuple[str, str]], index: int, *, until_end: bool) -> tuple[list[Node], int]:
    nodes: list[Node] = []
    while index < len(items):
        kind, value = items[index]
        if kind == "END":
            if until_end:
                return nodes, index + 1
            raise StatementError(error_step(156, "Incorrect syntax near the keyword 'END'."))
        if kind == "IF":
            node, index = _if(items, index)
            nodes.append(node)
            continue
        if kind == "BEGIN":  # a block of its own (a procedure's body): its statements, in order
            inner, index = _block(items, index + 1, until_end=True)
            nodes += inner
            continue
        if kind == "ELSE":
            raise StatementError(error_step(156, "Incorrect syntax near the keyword 'ELSE'."))
        nodes.append(_statement(value))
        index += 1
    if until_end:
        raise StatementError(error_step(102, "Incorrect syntax near the end of the batch: BEGIN without END."))
    return nodes, index


def _if(items: list[tuple[str, str]], index: int) -> tuple[Block, int]:
    condition = items[index][1].strip()
    then, index = _branch(items, index + 1)
    otherwise: list[Node] = []
    if index < len(items) and items[index][0] == "ELSE":
        otherwise, index = _branch(items, index + 1)
    return Block(condition, tuple(then), tuple(otherwise)), index


def _branch(items: list[tuple[str, str]], index: int) -> tuple[list[Node], int]:
    kind = items[index][0] if index < len(items) else "EOF"
    if kind == "BEGIN":
        return _block(items, index + 1, until_end=True)
    if kind == "IF":
        node, index = _if(items, index)
        return [node], index
    if kind == "STATEMENT":
        return [_statement(items[index][1])], index + 1
    raise StatementError(error_step(102, f"Incorrect syntax near '{kind}'."))


def _statement(text: str) -> Statement:
    clean = _STRING.sub("''", text).strip()
    reads = []
    for match in _OBJECT.finditer(clean):
        view = _normalise(match.group(1))
        alias = (match.group(2) or "").lower()
        if not alias or alias in _NOT_ALIASES:
            alias = view.split(".")[-1]
        reads.append((view, alias))
    aliases = {alias for _, alias in reads}
    columns = tuple(
        (m.group(1).lower(), m.group(2).lower()) for m in _COLUMN.finditer(clean) if m.group(1).lower() in aliases
    )
    return Statement(text.strip(), tuple(reads), columns)


def _normalise(name: str) -> str:
    parts = [part.strip().strip("[]").lower() for part in name.split(".")]
    return ".".join(parts[-2:])


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    out = []
    for line in text.splitlines():
        quoted = False
        for index, char in enumerate(line):
            if char == "'":
                quoted = not quoted
            elif not quoted and line.startswith("--", index):
                line = line[:index]
                break
        out.append(line)
    return "\n".join(out)


def _split_top_level(text: str) -> list[str]:
    """``text`` cut at the semicolons outside strings and parentheses; the last piece is what is left."""
    pieces: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        if char == ";" and not quoted and depth == 0:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces
