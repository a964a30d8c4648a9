"""A scripted stand-in for ``supervisor.children.runtime`` whose behaviour the tenant slug selects.

- ``crash-*``: raises at start (exit CHILD_EXIT_CRASH through child_main)
- ``config-*``: raises ConfigError at start (exit CHILD_EXIT_CONFIG)
- ``hang-*``: runs but never sends a heartbeat
- ``fat-*``: holds ~120 MiB of touched memory
- ``stubborn-*``: ignores the stop request
- ``chatty-*``: on stop, logs 300 numbered lines (every 50th with a traceback) before exiting
- anything else: idles, heartbeating every 0.3 s, until stopped
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from supervisor.errors import ConfigError
from supervisor.ipc import CHILD_EXIT_ORPHANED, Heartbeat

log = logging.getLogger("supervisor.fake_runtime")


class TenantRuntime:
    def __init__(
        self,
        spec: Any,
        stop: threading.Event,
        send_heartbeat: Callable[[Heartbeat], None],
        parent_alive: Callable[[], bool],
    ) -> None:
        self.spec, self.stop, self.send_heartbeat, self.parent_alive = spec, stop, send_heartbeat, parent_alive

    def run(self) -> int:
        slug = self.spec.slug
        if slug.startswith("crash-"):
            raise RuntimeError(f"simulated crash of {slug}")
        if slug.startswith("config-"):
            raise ConfigError(f"simulated unusable configuration of {slug}")
        ballast = bytearray(120 * 1024 * 1024) if slug.startswith("fat-") else b""
        for offset in range(0, len(ballast), 4096):
            ballast[offset] = 1
        # A setting of the spec it was given: shows which settings a child got (after a reload: the new ones).
        extra = {"event": "fake.started", "tenant": slug, "collection_interval": self.spec.settings.collection_interval}
        log.info("fake runtime of %s started", slug, extra=extra)
        while True:
            stopped = self.stop.wait(0.3)
            if stopped and not slug.startswith("stubborn-"):
                break
            if not self.parent_alive():
                return CHILD_EXIT_ORPHANED
            if not slug.startswith("hang-"):
                self.send_heartbeat(Heartbeat(sent_at=time.time()))
        if slug.startswith("chatty-"):
            for number in range(300):
                if number % 50 == 0:
                    try:
                        raise ValueError(f"traceback {number}")
                    except ValueError:
                        log.exception("chatty line %d", number, extra={"event": "fake.chatty", "tenant": slug})
                else:
                    log.info("chatty line %d", number, extra={"event": "fake.chatty", "tenant": slug})
        log.info("fake runtime of %s stopped", slug, extra={"event": "fake.stopped", "tenant": slug})
        return 0
