"""The ``schema_info`` table both schemas carry: one version per schema name (see migrations.py)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table


def schema_info_table(metadata: MetaData) -> Table:
    return Table(
        "schema_info",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("version", Integer, nullable=False),
    )
