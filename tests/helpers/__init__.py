"""The test helpers every folder shares, one contract each.

- ``waiting.wait_until``: poll a condition; returns its first truthy value or fails naming what it waited for.
- ``ports.free_ports`` (``free_port_run`` for consecutive ones): local TCP ports that no other pytest-xdist
  worker of the run is handed; no test picks ports of its own.
- ``drivers``: the two ODBC drivers (the ``driver`` fixture in ``tests/conftest.py``) and ``driver_setting``.
- ``postgres``: throwaway PostgreSQL databases (the ``pg_database`` fixture in ``tests/conftest.py``).
- ``simulator.Simulator``: a real ``python -m sqlserver_sim`` process (the ``simulator`` fixture), changed at
  run time by ``set_faults``/``set_servers``.
- ``deployment``: a folder with a ``collector.ini`` run through the real CLI and supervisors
  (``Deployment``, ``SupervisorProcess``), or one tenant registered directly for a child (``TenantDeployment``).
- ``cli.run_cli``: the command line as ``python -m supervisor`` in a subprocess.

Fixtures live in the conftest files; these modules hold what the fixtures and tests import.
"""
