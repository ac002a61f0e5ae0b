"""pytest's configuration: the plugins it needs, where the tests are, the arguments the runner needs."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from images.pytest_plugins import PLUGIN_MODULES, ini_plugin, option_plugin
from images.readers.collector import Collector, add_declared
from images.readers.common import read_text, relative_path, toml_table


def _pytest_config(c: Collector, pyproject: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The configuration pytest would use, with where it is: files in pytest's own precedence order."""
    for rel in ("pytest.toml", ".pytest.toml"):
        if (c.root / rel).is_file():
            doc = c.toml(rel)
            return f"{rel} [pytest]", toml_table(doc, "pytest")
    for rel in ("pytest.ini", ".pytest.ini"):
        if (c.root / rel).is_file():
            # These files are pytest's even without a [pytest] section.
            cfg = c.ini(rel)
            return f"{rel} [pytest]", dict(cfg.items("pytest")) if cfg and cfg.has_section("pytest") else {}
    tool_pytest = toml_table(pyproject, "tool", "pytest")
    native = {key: value for key, value in tool_pytest.items() if key != "ini_options"}
    if native:
        return "pyproject.toml [tool.pytest]", native
    if "ini_options" in tool_pytest:
        return "pyproject.toml [tool.pytest.ini_options]", toml_table(tool_pytest, "ini_options")
    for rel, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        cfg = c.ini(rel)
        if cfg is not None and cfg.has_section(section):
            return f"{rel} [{section}]", dict(cfg.items(section))
    return None


def _config_words(value: object) -> list[str]:
    """An option value as words: a TOML list as is, an INI string split like a shell would."""
    if isinstance(value, list):
        value = " ".join(str(item) for item in value)
    text = str(value)
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _implied_plugins(config: dict[str, Any]) -> dict[str, str]:
    """Distribution → the option or key that needs it (``--cov=pkg``, ``asyncio_mode``)."""
    plugins: dict[str, str] = {}
    args = _config_words(config.get("addopts", ""))
    for index, arg in enumerate(args):
        option = arg.split("=", 1)[0]
        trigger = arg
        if option == "-p" or (arg.startswith("-p") and len(arg) > 2 and not arg.startswith("--")):
            module = args[index + 1] if option == "-p" and index + 1 < len(args) else arg[2:]
            dist = PLUGIN_MODULES.get(module.strip())
            trigger = f"-p {module}"
        else:
            dist = option_plugin(arg)
        if dist is not None:
            plugins.setdefault(dist, f"addopts {trigger}")
    for key in config:
        dist = ini_plugin(key)
        if dist is not None:
            plugins.setdefault(dist, key)
    return plugins


def read(c: Collector) -> None:
    """The plugins pytest's configuration needs, pytest itself, the test paths and pytest's arguments."""
    c.test_paths = _read_pytest_config(c, c.toml("pyproject.toml"))
    if c.is_python:
        if not c.has_package("pytest"):
            c.add_packages(["pytest"], "always installed to run the tests")
    else:
        c.note("nothing to install: not a Python project")
    c.pytest_args = _pytest_args(c, c.test_paths)


def _read_pytest_config(c: Collector, pyproject: dict[str, Any] | None) -> tuple[str, ...]:
    """Record the plugins pytest's configuration needs; return the test paths."""
    located = _pytest_config(c, pyproject)
    where = ""
    declared: list[str] = []
    if located is None:
        c.note("pytest config: none found")
    else:
        where, config = located
        c.note(f"pytest config: {where}")
        required = _config_words(config.get("required_plugins", ""))
        if required:
            add_declared(c, required, f"{where} required_plugins")
        for dist, trigger in _implied_plugins(config).items():
            if c.has_package(dist):
                c.note(f"{dist} implied by {where} {trigger}: already listed")
            else:
                c.add_packages([dist], f"implied by {where} {trigger}")
        declared = _config_words(config.get("testpaths", ""))
    if toml_table(pyproject, "tool", "pytest_env") and not c.has_package("pytest-env"):
        c.add_packages(["pytest-env"], "implied by pyproject.toml [tool.pytest_env]")
    if declared:
        existing = [path for path in map(relative_path, declared) if path and _path_exists(c.root, path)]
        missing = [p for p in declared if relative_path(p) not in existing]
        if missing:
            c.note(f"testpaths {', '.join(missing)} not found: {where}")
        if existing:
            c.note(f"test paths {', '.join(existing)}: {where} testpaths")
            return tuple(existing)
    found = tuple(d for d in ("tests", "test", "testing") if (c.root / d).is_dir())
    if found:
        c.note(
            f"test paths {', '.join(found)}: directories found" + ("" if declared else ", no testpaths set")
        )
    else:
        c.note("test paths: none declared or found, pytest searches from the root")
    return found


def _path_exists(root: Path, path: str) -> bool:
    """Whether ``path`` (which may be a glob, as pytest allows in testpaths) names something in ``root``."""
    if (root / path).exists():
        return True
    if not any(ch in path for ch in "*?["):
        return False
    try:
        return any(root.glob(path))
    except (ValueError, NotImplementedError, OSError):
        return False


def _pytest_args(c: Collector, test_paths: tuple[str, ...]) -> tuple[str, ...]:
    """``--rootdir=.`` when pytest would otherwise take a directory below the root as its rootdir.

    Without any file pytest recognises at the root, running ``pytest tests`` makes ``tests`` the
    rootdir and test ids lose their ``tests/`` prefix; a pytest configuration inside a test path
    (``tests/pytest.ini``) does the same, whatever the root holds. Pinning the rootdir keeps ids
    relative to the repository's root, as grading and mining name them; pytest still reads that
    configuration file.
    """
    if not test_paths:
        return ()
    if nested := _nested_config(c.root, test_paths):
        c.note(f"pytest args --rootdir=.: {nested} would make its folder pytest's rootdir (and test ids)")
        return ("--rootdir=.",)
    anchors = ("setup.py", "pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml")
    anchors += ("tox.ini", "setup.cfg")
    if any((c.root / name).is_file() for name in anchors):
        return ()
    c.note("pytest args --rootdir=.: no file at the root that pytest anchors its rootdir (and test ids) to")
    return ("--rootdir=.",)


#: The files pytest takes its rootdir from, with the section that makes a shared file count (pytest
#: searches the test paths' common folder, then upwards).
_PYTEST_CONFIG_FILES = (
    ("pytest.ini", ""), (".pytest.ini", ""), ("pytest.toml", ""), (".pytest.toml", ""),
    ("pyproject.toml", "[tool.pytest"), ("tox.ini", "[pytest]"), ("setup.cfg", "[tool:pytest]"),
)  # fmt: skip


def _nested_config(root: Path, test_paths: tuple[str, ...]) -> str | None:
    """The first pytest configuration file between a test path and the root (both excluded)."""
    for path in test_paths:
        folder = (root / path).parent if (root / path).is_file() else root / path
        while folder != root and root in folder.parents:
            for name, section in _PYTEST_CONFIG_FILES:
                if (folder / name).is_file() and section in read_text(folder / name):
                    return (folder / name).relative_to(root).as_posix()
            folder = folder.parent
    return None


_NOT_TEST_DIRS = frozenset({"docs", "doc", "node_modules", "venv", "build", "dist", "site-packages"})
_TEST_CODE = re.compile(
    r"^\s*(def test|async def test|class \w*Test\w*\b|class \w+\(.*TestCase\))", re.MULTILINE
)


def explicit_test_files(root: Path, test_paths: Sequence[str]) -> tuple[str, ...]:
    """Python files under ``test_paths`` (default: the whole tree) that define tests, by content.

    For suites whose file names pytest's default ``test_*.py`` pattern misses (``tests/test.py``,
    ``tests/checks.py``): pytest collects a file named on its command line whatever its name.
    """
    found: list[str] = []
    for base in [root / path for path in test_paths] or [root]:
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in files:
            rel = path.relative_to(root)
            if path.name in ("conftest.py", "__init__.py", "setup.py") or any(
                part.startswith(".") or part in _NOT_TEST_DIRS for part in rel.parts
            ):
                continue
            try:
                if _TEST_CODE.search(path.read_text(errors="replace")):
                    found.append(rel.as_posix())
            except OSError:
                continue
    return tuple(found)
