#!/usr/bin/env bash
# The main job on embedded defaults (SQLite in ./.forager): set the machine up, build images of a few
# PyPI projects, make mutate-fix tasks in them, forage with the oracle policy (a local server speaking
# the OpenAI protocol, no GPU needed), and print what was stored.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
forager=.venv/bin/forager
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "forager doctor"
$forager doctor

say "Repository images"
$forager images build pypi:six==1.17.0 pypi:cachetools==8.0.1 pypi:termcolor==3.3.0 --jobs 2

say "Mutate-fix tasks"
$forager tasks mutate --max 3

say "Foraging with the oracle policy"
port=${FORAGER_ORACLE_PORT:-18765}
$forager serve oracle --port "$port" > .forager/oracle.log 2>&1 &
oracle=$!
trap 'kill $oracle 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/models')" \
        2>/dev/null && break
    sleep 0.2
done
$forager forage --model "http://127.0.0.1:$port/v1" --concurrency 4

say "Stored"
$forager db info
