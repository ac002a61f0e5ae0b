"""Project metadata: ``pyproject.toml`` (PEP 621, Poetry, Flit), ``setup.cfg``, ``setup.py``, ``PKG-INFO``."""

from __future__ import annotations

import ast
import configparser
import os
import re
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from images.readers.collector import Collector, Extra, add_declared, extra_size, parse_python
from images.readers.common import normalize_name, poetry_constraint, str_list, toml_table

#: Directories whose ``.py`` files do not make a repository a Python project on their own.
_NON_SOURCE_DIRS = frozenset({"tests", "test", "testing", "docs", "doc", "node_modules", "venv"})

_EXTRA_MARKER_RE = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def read(c: Collector) -> None:
    """Whether this is a Python project and installable; its names, version, Python and extras."""
    c.is_python = _is_python(c)
    pyproject = c.toml("pyproject.toml")
    setup_cfg = c.ini("setup.cfg")
    setup_kwargs = _read_setup_py(c)
    pkg_info = _read_pkg_info(c)
    # Metadata first: the project's names must be known before specifiers naming it can be dropped.
    if pyproject is not None:
        _read_pep621(c, pyproject)
        _read_poetry_metadata(c, pyproject)
        _read_flit_metadata(c, pyproject)
    tests_require: list[tuple[list[str], str]] = []
    if setup_cfg is not None:
        tests_require.append((_read_setup_cfg_metadata(c, setup_cfg), "setup.cfg [options] tests_require"))
    if setup_kwargs is not None:
        tests_require.append((_read_setup_py_metadata(c, setup_kwargs), "setup.py setup(tests_require=...)"))
    if pkg_info is not None:
        _read_pkg_info_metadata(c, pkg_info)
    c.installable = _installable(c, pyproject)
    for specs, where in tests_require:
        if specs:
            add_declared(c, specs, where)


def _installable(c: Collector, pyproject: dict[str, Any] | None) -> bool:
    reasons = []
    if pyproject is not None:
        reasons += [
            f"pyproject.toml [{t}]" for t in ("build-system", "project") if isinstance(pyproject.get(t), dict)
        ]
    reasons += [name for name in ("setup.py", "setup.cfg") if (c.root / name).is_file()]
    if not reasons:
        c.note("not installable: no pyproject.toml [build-system] or [project], setup.py or setup.cfg")
        return False
    c.note(f"installable: {', '.join(reasons)}")
    backend = toml_table(pyproject, "build-system").get("build-backend")
    if isinstance(backend, str) and backend.strip():
        c.set_scalar("build backend", backend, "pyproject.toml [build-system] build-backend")
    else:
        c.set_scalar("build backend", "setuptools.build_meta:__legacy__", "none declared, so pip's fallback")
    return True


def _is_python(c: Collector) -> bool:
    markers = [name for name in ("pyproject.toml", "setup.py", "setup.cfg") if (c.root / name).is_file()]
    if markers:
        c.note(f"Python project: {', '.join(markers)}")
        return True
    for dirpath, dirnames, filenames in os.walk(c.root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d.lower() not in _NON_SOURCE_DIRS
        )
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                rel = (Path(dirpath) / filename).relative_to(c.root).as_posix()
                c.note(f"Python project: {rel} (no packaging files)")
                return True
    c.note("not a Python project: no pyproject.toml, setup.py, setup.cfg or .py file outside tests and docs")
    return False


def _read_pep621(c: Collector, doc: dict[str, Any]) -> None:
    project = toml_table(doc, "project")
    dynamic = str_list(project.get("dynamic"))
    c.set_scalar("name", project.get("name"), "pyproject.toml [project] name")
    if "version" not in dynamic:
        c.set_scalar("version", project.get("version"), "pyproject.toml [project] version")
    c.set_scalar(
        "requires-python", project.get("requires-python"), "pyproject.toml [project] requires-python"
    )
    optional = toml_table(project, "optional-dependencies")
    if optional:
        extras = [
            Extra(
                name,
                "pyproject.toml [project.optional-dependencies]",
                extra_size(str_list(reqs), c.project_names),
            )
            for name, reqs in optional.items()
        ]
        c.declare_extras(extras, "pyproject.toml [project.optional-dependencies]")
    dynamic_optional = toml_table(doc, "tool", "setuptools", "dynamic", "optional-dependencies")
    if "optional-dependencies" in dynamic and dynamic_optional:
        where = "pyproject.toml [tool.setuptools.dynamic.optional-dependencies]"
        c.declare_extras([Extra(name, where) for name in dynamic_optional], where)


def _read_poetry_metadata(c: Collector, doc: dict[str, Any]) -> None:
    poetry = toml_table(doc, "tool", "poetry")
    if not poetry:
        return
    c.set_scalar("name", poetry.get("name"), "pyproject.toml [tool.poetry] name")
    c.set_scalar("version", poetry.get("version"), "pyproject.toml [tool.poetry] version")
    python = toml_table(poetry, "dependencies").get("python")
    if isinstance(python, str):
        c.set_scalar(
            "requires-python", poetry_constraint(python), "pyproject.toml [tool.poetry.dependencies] python"
        )
    extras = toml_table(poetry, "extras")
    if extras:
        where = "pyproject.toml [tool.poetry.extras]"
        c.declare_extras([Extra(name, where, len(str_list(reqs))) for name, reqs in extras.items()], where)


def _read_flit_metadata(c: Collector, doc: dict[str, Any]) -> None:
    """Flit's pre-PEP 621 ``[tool.flit.metadata]`` table, which flit_core still builds from."""
    flit = toml_table(doc, "tool", "flit", "metadata")
    if not flit:
        return
    c.set_scalar("name", flit.get("dist-name") or flit.get("module"), "pyproject.toml [tool.flit.metadata]")
    c.set_scalar("requires-python", flit.get("requires-python"), "pyproject.toml [tool.flit.metadata]")
    extras = toml_table(flit, "requires-extra")
    if extras:
        where = "pyproject.toml [tool.flit.metadata.requires-extra]"
        c.declare_extras(
            [
                Extra(name, where, extra_size(str_list(reqs), c.project_names))
                for name, reqs in extras.items()
            ],
            where,
        )


def _cfg_list(value: str) -> list[str]:
    """A setuptools list option: one item per line, or ``;``-separated on a single line."""
    items = value.splitlines() if "\n" in value.strip() else value.split(";")
    return [item.strip() for item in items if item.strip() and not item.strip().startswith("#")]


def _read_setup_cfg_metadata(c: Collector, cfg: configparser.ConfigParser) -> list[str]:
    """Read setup.cfg's metadata and extras; return its ``tests_require`` (added once names are known)."""
    c.set_scalar("name", cfg.get("metadata", "name", fallback=None), "setup.cfg [metadata] name")
    version = cfg.get("metadata", "version", fallback=None)
    # ``attr:`` and ``file:`` versions are computed at build time: not static.
    if version and not version.strip().startswith(("attr:", "file:")):
        c.set_scalar("version", version, "setup.cfg [metadata] version")
    c.set_scalar(
        "requires-python",
        cfg.get("options", "python_requires", fallback=None),
        "setup.cfg [options] python_requires",
    )
    if cfg.has_section("options.extras_require"):
        where = "setup.cfg [options.extras_require]"
        extras = [
            Extra(name, where, extra_size(_cfg_list(value), c.project_names))
            for name, value in cfg.items("options.extras_require")
        ]
        c.declare_extras(extras, where)
    return _cfg_list(cfg.get("options", "tests_require", fallback=""))


def _read_setup_py(c: Collector) -> dict[str, Any] | None:
    """The literal keyword arguments of setup.py's ``setup(...)`` call; None without setup.py.

    A keyword whose value is a module-level name bound to a literal (``extras_require=EXTRAS``) counts
    as that literal; anything computed is left out.
    """
    tree = parse_python(c, "setup.py")
    if tree is None:
        return None
    constants: dict[str, Any] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and value is not None:
            try:
                constants[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                constants.pop(target.id, None)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name != "setup" or not node.keywords:
            continue
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                continue
            if isinstance(keyword.value, ast.Name) and keyword.value.id in constants:
                kwargs[keyword.arg] = constants[keyword.value.id]
                continue
            try:
                kwargs[keyword.arg] = ast.literal_eval(keyword.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
        return kwargs
    c.note("setup.py: no setup(...) call with keyword arguments found")
    return {}


def _read_setup_py_metadata(c: Collector, kwargs: dict[str, Any]) -> list[str]:
    """Read setup.py's literal metadata and extras; return its ``tests_require``."""
    c.set_scalar("name", kwargs.get("name"), "setup.py setup(name=...)")
    c.set_scalar("version", kwargs.get("version"), "setup.py setup(version=...)")
    c.set_scalar("requires-python", kwargs.get("python_requires"), "setup.py setup(python_requires=...)")
    extras_require = kwargs.get("extras_require")
    if isinstance(extras_require, dict):
        where = "setup.py setup(extras_require=...)"
        extras = [
            Extra(name, where, extra_size(str_list(reqs), c.project_names))
            for name, reqs in extras_require.items()
            if isinstance(name, str)
        ]
        c.declare_extras(extras, where)
    return str_list(kwargs.get("tests_require"))


def _read_pkg_info(c: Collector) -> Message | None:
    text = c.text("PKG-INFO")
    return None if text is None else HeaderParser().parsestr(text)


def _read_pkg_info_metadata(c: Collector, info: Message) -> None:
    """An sdist's ``PKG-INFO``: the metadata as it was when the sdist was built."""
    c.set_scalar("name", info.get("Name"), "PKG-INFO Name")
    c.set_scalar("version", info.get("Version"), "PKG-INFO Version")
    c.set_scalar("requires-python", info.get("Requires-Python"), "PKG-INFO Requires-Python")
    extras = [str(name) for name in info.get_all("Provides-Extra") or []]
    if extras:
        sizes: dict[str, int] = {}
        for requirement in info.get_all("Requires-Dist") or []:
            for extra in _EXTRA_MARKER_RE.findall(str(requirement)):
                sizes[normalize_name(extra)] = sizes.get(normalize_name(extra), 0) + 1
        where = "PKG-INFO Provides-Extra"
        c.declare_extras([Extra(name, where, sizes.get(normalize_name(name), 0)) for name in extras], where)
