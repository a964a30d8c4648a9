"""Loaded by a supervisor under test when PYTHONPATH includes this folder: that process stands for another build.

``COLLECTOR_TEST_OLDER_BUILD=1``: a collector one tenant schema version behind this code, so every tenant DB this
code made is newer than its own: its ``upgrade_tenant`` (looked up by the child when it is imported, after this)
refuses such an existing DB as that build would, with ``NewerSchemaError``. ``COLLECTOR_TEST_RECHECK_AFTER``: seconds a
tenant it refused is left to others (``supervisor.parent.newer_schema.RECHECK_AFTER``) instead of minutes.
"""

import os

if os.environ.get("COLLECTOR_TEST_OLDER_BUILD") == "1":
    from supervisor.storage import migrations

    current_upgrade = migrations.upgrade_tenant

    def older_upgrade_tenant(engine, *, create=True):
        current_upgrade(engine, create=create)  # the DB is at this code's version (or the real error is raised)
        if create:
            return  # the parent's warm-up on a DB of its own making; a child checks an existing DB (create=False)
        raise migrations.NewerSchemaError(
            f"tenant DB {engine.url} has schema version {migrations.TENANT_VERSION}, newer than this collector's "
            f"{migrations.TENANT_VERSION - 1}: upgrade collector-supervisor"
        )

    migrations.upgrade_tenant = older_upgrade_tenant
if recheck_after := os.environ.get("COLLECTOR_TEST_RECHECK_AFTER"):
    from supervisor.parent import newer_schema

    newer_schema.RECHECK_AFTER = float(recheck_after)
