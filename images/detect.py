"""Read what a Python project declares and turn it into an install plan.

:func:`detect` runs the readers in :data:`READERS`, one module each under :mod:`images.readers` for one
source of install knowledge: packaging metadata (``pyproject.toml``, ``setup.cfg``, ``setup.py``,
``PKG-INFO``), development dependencies, requirement files, tox, nox, CI workflows, lock files and
pytest's configuration. It is heuristics only: files are parsed (``tomllib``, ``configparser``, ``ast``,
PyYAML, ``packaging``), never executed or imported, and nothing touches the network. A file that cannot
be read or parsed is skipped with an evidence line; :func:`detect` does not raise for anything a
repository contains. A new source of install knowledge is a new reader module and one more entry here.

Every decision leaves one line in :attr:`InstallPlan.evidence`, which build logs show to users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from images.readers import ci, dev_dependencies, locks, metadata, nox, pytest_config, requirements, tox
from images.readers.collector import Collector


@dataclass(frozen=True)
class InstallPlan:
    """What a project declares, reduced to what an image build needs to install and run its tests."""

    is_python: bool
    """``pyproject.toml``, ``setup.py`` or ``setup.cfg`` is present, or a ``.py`` file outside tests/docs."""
    installable: bool
    """``pip install .`` has something to build: ``pyproject.toml`` with ``[build-system]`` or
    ``[project]``, ``setup.py`` or ``setup.cfg``."""
    name: str | None
    """The project's distribution name, as declared."""
    version: str | None
    """A statically declared version (e.g. to pretend one for setuptools_scm when ``.git`` is absent)."""
    requires_python: str | None
    """The declared ``Requires-Python`` specifier."""
    build_backend: str | None
    """The PEP 517 backend; ``setuptools.build_meta:__legacy__`` (pip's fallback) when an installable
    project declares none."""
    extras: tuple[str, ...]
    """Optional-dependency groups to install with the project for its tests, test-ish ones first."""
    dependency_groups: tuple[str, ...]
    """PEP 735 ``[dependency-groups]`` to install for the tests."""
    requirement_files: tuple[str, ...]
    """Requirement files to ``pip install -r``: POSIX paths relative to the root, the main one first."""
    packages: tuple[str, ...]
    """Further requirement specifiers to install (dev dependencies, tox/nox/CI installs, pytest plugins
    the pytest configuration needs, pytest itself), one per distribution and environment marker."""
    test_paths: tuple[str, ...]
    """Where the tests live, relative to the root; empty to let pytest search from the root."""
    pytest_args: tuple[str, ...]
    """Extra pytest arguments the runner needs; usually empty."""
    lock_file: str | None
    """The lock file whose versions the install follows (``uv.lock``, ``poetry.lock``, a pinned
    constraints file...), or None."""
    pins: tuple[str, ...]
    """``name==version`` constraints from :attr:`lock_file`, applied to every install step."""
    evidence: tuple[str, ...]
    """One human-readable line per decision, naming the file (and table or section) it rests on."""


#: The readers, in order: metadata first (the project's own names must be known before specifiers
#: naming it are dropped), pytest's configuration last (pytest is added only if nothing listed it).
READERS: tuple[Callable[[Collector], None], ...] = (
    metadata.read,
    dev_dependencies.read,
    requirements.read,
    tox.read,
    nox.read,
    ci.read,
    locks.read,
    pytest_config.read,
)


def detect(root: Path) -> InstallPlan:
    """Read what the project at ``root`` declares and return its install plan.

    Only files are read; no project code runs, and a malformed file is skipped with an evidence line.
    """
    c = Collector(root)
    for read in READERS:
        read(c)
    # Last: CI commands and tox environments may have asked for extras too.
    extras = c.chosen_extras()
    return InstallPlan(
        is_python=c.is_python,
        installable=c.installable,
        name=c.scalars.get("name"),
        version=c.scalars.get("version"),
        requires_python=c.scalars.get("requires-python"),
        build_backend=c.scalars.get("build backend"),
        extras=extras,
        dependency_groups=tuple(c.groups),
        requirement_files=tuple(c.requirement_files),
        packages=tuple(c.packages.values()),
        test_paths=c.test_paths,
        pytest_args=c.pytest_args,
        lock_file=c.lock_file,
        pins=tuple(c.pins),
        evidence=tuple(c.evidence),
    )
