"""A SQL Server simulator: an asyncio TDS 7.4 server that real ODBC drivers connect to.

Run it with ``python -m sqlserver_sim`` (see :mod:`sqlserver_sim.cli`); the fleet file format is
described in :mod:`sqlserver_sim.fleet`.
"""
