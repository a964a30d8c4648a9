"""The benign (idle/background) wait types, kept as data in ``benign_wait_types.txt``."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def benign_wait_types() -> frozenset[str]:
    text = resources.files(__package__).joinpath("benign_wait_types.txt").read_text(encoding="utf-8")
    names = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(name.upper() for name in names if name)
