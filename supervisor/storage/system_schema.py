"""System DB: tenants (README "Databases") and the supervisor's own bookkeeping.

- ``supervisor_instances``: one row per running (or past) supervisor process: host, pid, heartbeat.
- ``tenant_leases``: which instance runs which tenant, until ``expires_at`` (renewed every poll), and the
  tenant's weight for sharing them out (``servers``, since schema version 2).
- ``tenant_children``: the child process of each tenant: pid, state, restarts, last exit.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from supervisor.storage.schema_info import schema_info_table

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(63), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("db_url", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("slug", name="uq_tenants_slug"),
)

supervisor_instances = Table(
    "supervisor_instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("stopped_at", DateTime, nullable=True),
    Column("status", String(16), nullable=False),
    Column("process_key", String(200), nullable=True),  # process_identity.key (schema 3)
)

tenant_leases = Table(
    "tenant_leases",
    metadata,
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("owner", String(64), nullable=True),
    Column("acquired_at", DateTime, nullable=True),
    Column("expires_at", DateTime, nullable=True),
    #: The tenant's collection-enabled servers as its child last reported them: its weight when instances split
    #: the tenants (parent/leases.py). Kept when the lease is released; NULL until a child has reported.
    Column("servers", Integer, nullable=True),
)

tenant_children = Table(
    "tenant_children",
    metadata,
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("instance_id", String(64), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("state", String(16), nullable=False),
    Column("restarts", Integer, nullable=False, default=0),
    Column("started_at", DateTime, nullable=True),
    Column("heartbeat_at", DateTime, nullable=True),
    Column("last_exit_code", Integer, nullable=True),
    Column("last_exit_at", DateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("rss_mb", Float, nullable=True),
    Column("process_key", String(200), nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

schema_info = schema_info_table(metadata)
