"""README's "SQL Server flavours" table is the one the collector's flavour tests check stored snapshots against
(``supervisor/procedures/flavour_table.py``), and it names every flavour, metric and NULL."""

from __future__ import annotations

from pathlib import Path

from supervisor.procedures import flavour_table
from supervisor.procedures.catalog import VIEWS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_shows_the_flavour_table() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## SQL Server flavours\n"):]
    section = section[: section.index("\n## ", 1)]
    assert flavour_table.markdown() in section
    for name in VIEWS:
        assert f"`{name}`" in section, name
    assert "procedures --print --grants" in section and "--token-command" in section and "--database" in section


def test_every_null_has_its_reason() -> None:
    for metric, sources in flavour_table.SOURCES.items():
        assert set(sources) == set(flavour_table.COLUMNS), metric
        for flavour, source in sources.items():
            assert (source is None) == ((metric, flavour) in flavour_table.NULL_REASONS), (metric, flavour)
