"""The ``collector-supervisor`` command line (CONTRACT §2)."""
