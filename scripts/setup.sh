#!/usr/bin/env bash
# Set up this checkout on a Debian 12 machine: the Python environment, a Docker engine and the base
# image. Safe to run again: every step is skipped when its work is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

can_apt() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; }
apt_updated=""
apt_install() {
    can_apt || die "$1 is missing: install it (Debian: apt-get install -y $*), then run this again"
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

say "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
# The realmodel extra compiles llama.cpp from its sdist the first time (minutes): CPU-only and for any
# x86-64 CPU (no -march=native), so the wheel pip caches (~/.cache/pip) serves every later run and machine.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF}" \
    .venv/bin/pip install -q -e '.[dev,realmodel]'

say "Docker engine"
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || apt_install docker.io
    can_apt || die "no Docker engine answers: start yours (or set DOCKER_HOST) and run this again"
    # No bridge and no iptables: episode containers run without a network, and builds use the host's.
    nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/forager-dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || die "dockerd did not come up within 60 s: see /var/log/forager-dockerd.log"
fi
docker version --format '    Docker Engine {{.Server.Version}}'

say "Container registry on 127.0.0.1:5000 (for forager images push and its tests)"
registry_up() { python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=2)' 2>/dev/null; }
if ! registry_up; then
    if ! command -v docker-registry >/dev/null && can_apt; then apt_install docker-registry; fi
    if command -v docker-registry >/dev/null; then
        # Plain HTTP on loopback only, no auth: the engine trusts 127.0.0.0/8 registries as insecure.
        registry_dir="${FORAGER_REGISTRY_DIR:-/var/lib/forager-registry}"
        mkdir -p "$registry_dir"
        printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:5000\n' \
            "$registry_dir/data" >"$registry_dir/config.yml"
        nohup docker-registry serve "$registry_dir/config.yml" >"$registry_dir/registry.log" 2>&1 &
        for _ in $(seq 30); do registry_up && break; sleep 1; done
        registry_up || die "the registry did not come up: see $registry_dir/registry.log"
    else
        echo "    docker-registry is not installed (needs root and apt): registry tests will be skipped"
    fi
fi

say "Base image"
# debootstrap makes bookworm's base (Python 3.11) now, and bullseye's (3.9) or trixie's (3.13) when a build
# first needs it: so it is installed even when bookworm's base exists, wherever apt can.
if ! docker image inspect forager/base:bookworm >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || apt_install debootstrap
fi
command -v debootstrap >/dev/null || ! can_apt || apt_install debootstrap
.venv/bin/forager images base
