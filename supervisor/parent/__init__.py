"""The parent process's machinery: the loop, the child handle and its state machine, forking, the
watchdog, signals, the log relay, and the system DB (health, sync, leases, instances, children table).

Nothing under ``supervisor/children/`` imports from here. See docs/architecture.md.
"""
