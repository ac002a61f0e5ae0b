"""What a Rust crate needs from outside the checkout: the crates cargo downloads, and why it could not.

A build container reaches the package registries the builder is configured for; cargo's crates registry
(crates-io) may not be one of them. :func:`downloaded_crates` says from the checkout whether cargo needs
to download anything at all (a crate that does not can build with ``CARGO_NET_OFFLINE=true``);
:func:`fetch_failure` finds, in a failed build's log, cargo saying it could not get a crate, so the
failure names the registry it could not reach instead of maturin's generic ``Cargo metadata failed``.
"""

from __future__ import annotations

import re
from pathlib import Path

from images.readers.common import read_toml

#: The tables of a Cargo manifest listing dependencies; cargo resolves all three before building.
_DEPENDENCY_TABLES = ("dependencies", "dev-dependencies", "build-dependencies")
#: Cargo could not get a dependency (``failed to get `itoa` as a dependency of package `x v0.1.0```), or,
#: offline, had no copy of it (``no matching package named `itoa` found``).
_NOT_FETCHED = re.compile(
    r"failed to get `([^`]+)` as a dependency of package|no matching package named `([^`]+)` found"
)
#: What cargo says around it when the cause is the network (a download, a host name, offline mode).
_NETWORK = re.compile(
    r"spurious network error|failed to download|Couldn't resolve host|Could not resolve host|"
    r"failed to connect|--offline|offline mode",
    re.IGNORECASE,
)


def downloaded_crates(manifest: Path, root: Path) -> tuple[str, ...] | None:
    """Crates cargo downloads to build the crate of ``manifest`` (``Cargo.toml``): from a registry or git.

    Read from the ``Cargo.lock`` beside the manifest (or at the checkout's ``root``, a workspace's),
    else from the manifest's dependency tables. Empty when the build needs nothing from outside the
    checkout; None when that cannot be known (no lock file and a workspace manifest, or unreadable).
    """
    for lock in (manifest.parent / "Cargo.lock", root / "Cargo.lock"):
        if lock.is_file():
            packages = read_toml(lock).get("package")
            if not isinstance(packages, list):
                return None
            # A package with a ``source`` comes from a registry or git; local (path) crates have none.
            remote = [p.get("name") for p in packages if isinstance(p, dict) and p.get("source")]
            return tuple(sorted({str(name) for name in remote}))
    data = read_toml(manifest)
    if not data or "workspace" in data:
        return None
    tables = [data, *(t for t in _dict(data.get("target")).values() if isinstance(t, dict))]
    names = set()
    for table in tables:
        for kind in _DEPENDENCY_TABLES:
            for name, spec in _dict(table.get(kind)).items():
                if isinstance(spec, dict) and "path" in spec and "git" not in spec:
                    return None  # a local crate's own dependencies would need reading too: unknown
                names.add(name)
    return tuple(sorted(names))


def fetch_failure(log: str) -> str | None:
    """The crate cargo could not download, per ``log``, when the network was the cause; else None."""
    match = _NOT_FETCHED.search(log)
    if match is None or not _NETWORK.search(log):
        return None
    return match[1] or match[2]


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}
