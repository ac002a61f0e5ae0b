"""Python projects inside a checkout besides the project itself: examples, plugins, test helpers.

Flask's ``examples/javascript`` is a project of its own (``js_example``) whose tests the suite collects;
tox installs it from its ``deps``, nothing on the package index provides it. When collection reports
such a module missing, the repair installs the folder (:func:`local_modules` tells which).
"""

from __future__ import annotations

import os
from pathlib import Path

#: How deep below the root a project folder may sit (``examples/javascript``, ``plugins/a/b``).
MAX_DEPTH = 3
_METADATA = ("pyproject.toml", "setup.py", "setup.cfg")
#: Folders not walked (hidden ones neither): environments, builds, and test data, whose setup.py files
#: are inputs of the project's tests (black's tests/data), not projects.
_SKIPPED = frozenset({"venv", "node_modules", "build", "dist", "site-packages", "data", "fixtures"})
#: Names no missing-module repair should install a folder for: a test package of a sub-project would
#: otherwise claim every "No module named 'tests'".
_NOT_MODULES = frozenset({"setup", "conftest", "noxfile", "tests", "test", "testing", "docs", "examples"})


def local_modules(root: Path) -> dict[str, str]:
    """Top-level module name → the folder (``./examples/javascript``, relative to ``root``) of a project
    inside the checkout that provides it: packages and modules beside its metadata file or under its
    ``src/``. The checkout's own project (at ``root``) maps to ``.``; the shallowest folder wins."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        below = depth < MAX_DEPTH
        dirs[:] = sorted(d for d in dirs if below and d not in _SKIPPED and not d.startswith("."))
        if not any(name in files for name in _METADATA):
            continue
        for module in _modules_of(here):
            found.setdefault(module, "./" + here.relative_to(root).as_posix() if depth else ".")
    return found


def _modules_of(project: Path) -> list[str]:
    modules = []
    for place in (project, project / "src"):
        if not place.is_dir():
            continue
        for entry in sorted(place.iterdir()):
            if entry.is_dir() and (entry / "__init__.py").is_file() and entry.name.isidentifier():
                if entry.name not in _NOT_MODULES:
                    modules.append(entry.name)
            elif entry.suffix == ".py" and entry.stem.isidentifier() and entry.stem not in _NOT_MODULES:
                modules.append(entry.stem)
    return modules
