"""The per-tenant child process: scheduler, collection pool, writer."""
