#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for collector-supervisor: ODBC drivers, PostgreSQL
# (for the tests), supervisord, Prometheus and systemd-analyze (for their tests), and a virtual
# environment in .venv with the project.
# Safe to run again: every step checks before it changes anything.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
# prometheus: promtool and the server for the alert rules' and the scrape test; systemd: systemd-analyze
# for the unit's test (already there on a booted Debian, not in a bare container image);
# prometheus-sql-exporter: the Go peer of bench.peer_sql_exporter, for that benchmark's smoke test.
PACKAGES=(unixodbc tdsodbc freetds-bin libgssapi-krb5-2 libltdl7 python3-venv python3-pip postgresql supervisor
    prometheus systemd prometheus-sql-exporter)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# FreeTDS registers itself in /etc/odbcinst.ini on Debian; make sure it is there.
if ! odbcinst -q -d 2>/dev/null | grep -q '^\[FreeTDS\]'; then
    odbcinst -i -d -f /usr/share/tdsodbc/odbcinst.ini >/dev/null
fi

# PostgreSQL: start the cluster if nothing listens on 127.0.0.1:5432, and let the tests connect as
# postgres over TCP without a password (the tests' throwaway databases only).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! psql -h 127.0.0.1 -U postgres -w -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup done: .venv/bin/collector-supervisor is ready"
