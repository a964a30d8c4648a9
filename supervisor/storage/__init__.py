"""SQLAlchemy Core schemas and engines for the system DB and the tenant DBs."""
