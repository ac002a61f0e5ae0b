#!/usr/bin/env bash
# The whole test suite, Docker- and PostgreSQL-marked tests included, on a machine set up from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

printf '\033[1m==> %s\033[0m\n' "PostgreSQL for the postgres-marked tests"
if [ -z "${FORAGER_TEST_POSTGRES_URL:-}" ]; then
    if ! command -v pg_lsclusters >/dev/null; then
        [ "$(id -u)" = 0 ] || { echo "error: PostgreSQL is missing: install it or set FORAGER_TEST_POSTGRES_URL" >&2; exit 1; }
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
    [ "$status" = online ] || pg_ctlcluster "$version" "$cluster" start
    su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_roles WHERE rolname = 'forager'\"" | grep -q 1 \
        || su postgres -c "psql -q -p $port -c \"CREATE ROLE forager LOGIN SUPERUSER PASSWORD 'forager'\""
    su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname = 'forager_test'\"" | grep -q 1 \
        || su postgres -c "createdb -p $port -O forager forager_test"
    export FORAGER_TEST_POSTGRES_URL="postgresql+psycopg://forager:forager@127.0.0.1:$port/forager_test"
fi

printf '\033[1m==> %s\033[0m\n' "chromium for the viewer's browser tests"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "error: chromium is missing: apt-get install chromium chromium-driver" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

printf '\033[1m==> %s\033[0m\n' "ruff"
.venv/bin/ruff check .
printf '\033[1m==> %s\033[0m\n' "pytest"
# Several worker processes (pytest-xdist): most tests wait on the Docker engine or a subprocess, so even
# 2 cores keep 4 busy. Tests using a module-scoped fixture of their module share one worker (loadgroup,
# see tests/conftest.py). FORAGER_TEST_WORKERS=0 runs in this process; "$@" comes last and wins.
.venv/bin/pytest -n "${FORAGER_TEST_WORKERS:-4}" --dist loadgroup --durations=25 "$@"
