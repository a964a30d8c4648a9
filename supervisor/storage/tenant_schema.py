"""Tenant DB (README "Databases"): servers, their collection config, snapshots, waits, status events.

Column types are kept compact: the snapshot tables grow with every collection. The index
``ix_metric_snapshots_server_time`` (unique) serves the web app's "last N hours of server X".
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from supervisor.storage.schema_info import schema_info_table

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")

servers = Table(
    "servers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("username", String(128), nullable=True),
    Column("password_encrypted", Text, nullable=True),
    Column("encrypt", String(16), nullable=True),
    Column("trust_server_certificate", Boolean, nullable=True),
    Column("collection_mode", String(16), nullable=True),
    # Schema version 2 (migrations.py): the database to log in to (NULL: master), how to authenticate
    # (NULL: sql, the username and password above; entra-token: an Entra ID access token) and where the
    # token comes from (a command the child runs, or a file; exactly one with entra-token).
    Column("database", String(128), nullable=True),
    Column("auth", String(16), nullable=True),
    Column("token_command", Text, nullable=True),
    Column("token_file", Text, nullable=True),
    Column("status", String(16), nullable=False, default="unknown"),
    Column("status_changed_at", DateTime, nullable=True),
    Column("last_checked_at", DateTime, nullable=True),
    Column("last_success_at", DateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_error_class", String(16), nullable=True),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("created_at", DateTime, nullable=False),
    Column("removed_at", DateTime, nullable=True),
    UniqueConstraint("name", name="uq_servers_name"),
)

collection_configs = Table(
    "collection_configs",
    metadata,
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("interval_seconds", Integer, nullable=True),
)

metric_snapshots = Table(
    "metric_snapshots",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("collected_at", DateTime, nullable=False),
    Column("cpu_percent", SmallInteger, nullable=True),
    Column("system_cpu_percent", SmallInteger, nullable=True),
    Column("memory_percent", Float, nullable=True),
    Column("sql_memory_mb", Integer, nullable=True),
    Column("sql_target_memory_mb", Integer, nullable=True),
    Column("connection_count", Integer, nullable=True),
    Column("batch_requests_per_sec", Float, nullable=True),
    Column("interval_seconds", Float, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    UniqueConstraint("server_id", "collected_at", name="ix_metric_snapshots_server_time"),
    # Retention deletes by age across all servers.
    Index("ix_metric_snapshots_collected_at", "collected_at"),
)

wait_stats = Table(
    "wait_stats",
    metadata,
    Column("snapshot_id", BigId, ForeignKey("metric_snapshots.id", ondelete="CASCADE"), nullable=False),
    Column("wait_type", String(60), nullable=False),
    Column("waiting_tasks_count", BigInteger, nullable=False),
    Column("wait_time_ms", BigInteger, nullable=False),
    Column("signal_wait_time_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("snapshot_id", "wait_type", name="pk_wait_stats"),
)

server_status_events = Table(
    "server_status_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Index("ix_server_status_events_server_at", "server_id", "at"),
)

# The previous cumulative sample per server, so a restarted child keeps its rate baseline.
counter_baselines = Table(
    "counter_baselines",
    metadata,
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("sqlserver_start_time", DateTime, nullable=False),
    Column("sample_time", DateTime, nullable=False),
    Column("batch_requests_total", BigInteger, nullable=True),
    Column("waits_json", Text, nullable=False),
    # Tenant addition 1 (migrations.py): this host's clock when that sample's collection started (a server's
    # clock may step).
    Column("checked_at", DateTime, nullable=True),
)

schema_info = schema_info_table(metadata)
