"""Foreground single-tenant mode: ``python -m supervisor.children -c collector.ini TENANT``.

Runs one tenant's runtime in this process with logs on stderr (the ``[logging]`` settings).
SIGTERM/SIGINT stop it gracefully; exit 0. For ops debugging and for tests that need a real process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from supervisor import databases
from supervisor.config import load_settings
from supervisor.errors import CollectorError
from supervisor.ipc import ChildSpec, Heartbeat
from supervisor.logs import configure_logging
from supervisor.tenants import get_tenant

log = logging.getLogger("supervisor.child")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.children", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="collector.ini")
    parser.add_argument("tenant")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    try:
        settings = load_settings(args.config)
        configure_logging(settings.logging)
        tenant = get_tenant(databases.system_engine(settings), args.tenant)
        spec = ChildSpec(
            tenant_id=tenant.id,
            slug=tenant.slug,
            db_url=databases.tenant_url(settings, tenant),
            instance_id=f"foreground-{os.getpid()}",
            settings=settings,
        )
        from supervisor.children.runtime import TenantRuntime

        def no_heartbeat(_beat: Heartbeat) -> None:
            return None

        return TenantRuntime(spec, stop, no_heartbeat, lambda: True).run()
    except CollectorError as exc:
        print(f"supervisor.children: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
