#!/usr/bin/env bash
# The main job on embedded defaults: set up the machine, then check it is ready to forage.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
printf '\033[1m==> %s\033[0m\n' "forager doctor"
.venv/bin/forager doctor
