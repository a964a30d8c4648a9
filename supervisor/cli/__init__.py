"""The ``collector-supervisor`` command line (README "Command line")."""
