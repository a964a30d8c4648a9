"""collector-supervisor: one collector child process per tenant, fed by SQL Server DMVs."""

__version__ = "0.1.0"
