#!/usr/bin/env bash
# Lint, then the whole test suite (SQLite and PostgreSQL, both ODBC drivers, real processes).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
