"""Development dependencies declared in ``pyproject.toml`` and ``hatch.toml``: PEP 735 groups, Poetry,
PDM, uv and Hatch environments."""

from __future__ import annotations

from typing import Any

from images.readers.collector import Collector, add_declared, select_named
from images.readers.common import name_tier, poetry_constraint, str_list, toml_table


def read(c: Collector) -> None:
    pyproject = c.toml("pyproject.toml")
    if pyproject is not None:
        _read_dependency_groups(c, pyproject)
        _read_poetry_dev(c, pyproject)
        _read_pdm_dev(c, pyproject)
        _read_uv_dev(c, pyproject)
        _read_hatch_envs(
            c, toml_table(pyproject, "tool", "hatch", "envs"), "pyproject.toml [tool.hatch.envs.{}]"
        )
    hatch = c.toml("hatch.toml")
    if hatch is not None:
        _read_hatch_envs(c, toml_table(hatch, "envs"), "hatch.toml [envs.{}]")


def _read_dependency_groups(c: Collector, doc: dict[str, Any]) -> None:
    groups = toml_table(doc, "dependency-groups")
    if not groups:
        return
    chosen, rest = select_named(groups)
    for name in chosen:
        c.add_group(name)
    if chosen:
        c.note(f"dependency groups {', '.join(chosen)}: pyproject.toml [dependency-groups]")
    if rest:
        c.note(f"dependency groups {', '.join(rest)} not installed (not test-related): pyproject.toml")


def _poetry_requirement(name: str, value: object) -> str | None:
    """A Poetry dependency entry as a PEP 508 specifier; None for ``python`` and path/git/url ones."""
    if name.lower() == "python":
        return None
    if isinstance(value, list):
        # Several constraints for different Pythons: the first stands for them all.
        value = value[0] if value else "*"
    extras: list[str] = []
    markers = None
    if isinstance(value, dict):
        if any(key in value for key in ("path", "git", "url", "file")):
            return None
        extras = str_list(value.get("extras"))
        markers = value.get("markers")
        value = value.get("version", "*")
    if not isinstance(value, str):
        return None
    spec = name + (f"[{','.join(extras)}]" if extras else "") + poetry_constraint(value)
    return f"{spec}; {markers}" if isinstance(markers, str) and markers.strip() else spec


def _add_poetry_table(c: Collector, table: dict[str, Any], where: str) -> None:
    specs = []
    skipped = []
    for name, value in table.items():
        spec = _poetry_requirement(name, value)
        if spec is not None:
            specs.append(spec)
        elif name.lower() != "python":
            skipped.append(f"{name} (path, git or url dependency)")
    c.add_packages(specs, where)
    if skipped:
        c.note(f"skipped in {where}: {', '.join(skipped)}")


def _read_poetry_dev(c: Collector, doc: dict[str, Any]) -> None:
    poetry = toml_table(doc, "tool", "poetry")
    legacy = toml_table(poetry, "dev-dependencies")
    if legacy:
        _add_poetry_table(c, legacy, "pyproject.toml [tool.poetry.dev-dependencies]")
    groups = toml_table(poetry, "group")
    chosen, rest = select_named(groups)
    for name in chosen:
        where = f"pyproject.toml [tool.poetry.group.{name}.dependencies]"
        _add_poetry_table(c, toml_table(groups, name, "dependencies"), where)
    if rest:
        c.note(f"poetry groups {', '.join(rest)} not installed (not test-related): pyproject.toml")


def _read_pdm_dev(c: Collector, doc: dict[str, Any]) -> None:
    groups = toml_table(doc, "tool", "pdm", "dev-dependencies")
    chosen, rest = select_named(groups)
    for name in chosen:
        add_declared(c, str_list(groups[name]), f"pyproject.toml [tool.pdm.dev-dependencies] {name}")
    if rest:
        c.note(f"pdm dev groups {', '.join(rest)} not installed (not test-related): pyproject.toml")


def _read_uv_dev(c: Collector, doc: dict[str, Any]) -> None:
    dev = str_list(toml_table(doc, "tool", "uv").get("dev-dependencies"))
    if dev:
        add_declared(c, dev, "pyproject.toml [tool.uv] dev-dependencies")


def _read_hatch_envs(c: Collector, envs: dict[str, Any], where_template: str) -> None:
    """Hatch's default and test environments: their dependencies, and ``features`` (extras)."""
    for name, env in envs.items():
        if not isinstance(env, dict) or (name not in ("default", "hatch-test") and name_tier(name) is None):
            continue
        where = where_template.format(name)
        for key in ("dependencies", "extra-dependencies"):
            items = str_list(env.get(key))
            if items:
                add_declared(c, items, f"{where} {key}")
        c.request_extras(str_list(env.get("features")), f"{where} features")
