"""tox configuration: ``tox.ini``, ``[tool.tox]`` in ``pyproject.toml`` and ``tox.toml``."""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable
from typing import Any

from images.readers.collector import Collector, Found
from images.readers.common import str_list, toml_table
from images.readers.installers import SHELL_COMMENT_RE, classify_target, pip_arguments

#: A tox factor condition before a dependency (``py38: pytest<8``, ``!pypy,django{32,42}: x``).
_TOX_FACTOR_RE = re.compile(r"!?\w[\w.{},!-]*:\s")
#: A tox reference to another setting, ``{[section]key}``.
_TOX_REFERENCE_RE = re.compile(r"\{\[([^\]]+)\]([\w-]+)\}")


def _tox_env_wanted(env: str) -> bool:
    """The base environment and the ones that run tests (``py*``, ``test*``), except for Pythons < 3.8.

    Environments for long-gone Pythons pin what only those Pythons could install.
    """
    version = re.match(r"py(\d)(\d+)", env)
    if version and (int(version[1]), int(version[2])) < (3, 8):
        return False
    return env == "" or env.startswith(("py", "test"))


def _tox_lines(cfg: configparser.ConfigParser, section: str, key: str, depth: int = 0) -> list[str]:
    """The lines of a tox setting, with whole-line ``{[section]key}`` references expanded."""
    lines = []
    for raw in cfg.get(section, key, fallback="").splitlines():
        reference = _TOX_REFERENCE_RE.fullmatch(raw.strip())
        # The depth bound stops reference cycles, which tox itself would reject.
        if reference and depth < 5 and cfg.has_option(reference[1], reference[2]):
            lines += _tox_lines(cfg, reference[1], reference[2], depth + 1)
        else:
            lines.append(raw)
    return lines


def _tox_deps(lines: Iterable[str], found: Found) -> None:
    for raw in lines:
        line = SHELL_COMMENT_RE.sub("", raw).strip()
        if not line:
            continue
        if _TOX_FACTOR_RE.match(line):
            # Deps for particular factors belong to particular environments, often conflicting ones.
            found.skipped.append(f"{line} (factor-conditional)")
            continue
        for root in ("{toxinidir}", "{tox_root}"):
            line = line.replace(root + "/", "").replace(root, ".")
        if line.startswith(("-r", "--requirement")):
            pip_arguments(line.split(), found, tooling=False)
        elif line.startswith(("-c", "--constraint")):
            continue
        elif line.startswith(("-e", "--editable")):
            pip_arguments(line.split(None, 1), found, tooling=False)
        elif line.startswith("-"):
            found.skipped.append(f"{line} (installer option)")
        else:
            classify_target(line, found, tooling=False)


def _tox_extras(lines: Iterable[str], found: Found) -> None:
    for raw in lines:
        for item in re.split(r"[,\s]+", SHELL_COMMENT_RE.sub("", raw).strip()):
            if not item:
                continue
            if ":" in item or "{" in item:
                found.skipped.append(f"extras {item} (factor-conditional or substitution)")
            else:
                found.extras.append(item)


def _read_tox_ini(c: Collector, cfg: configparser.ConfigParser, where: str) -> None:
    declined = []
    for section in cfg.sections():
        if section != "testenv" and not section.startswith("testenv:"):
            continue
        if not _tox_env_wanted(section.removeprefix("testenv").removeprefix(":")):
            declined.append(section.removeprefix("testenv:"))
            continue
        found = Found()
        _tox_deps(_tox_lines(cfg, section, "deps"), found)
        _tox_extras(_tox_lines(cfg, section, "extras"), found)
        c.apply(found, f"{where} [{section}]")
    if declined:
        c.note(f"{where} environments {', '.join(declined)} not read (not tests, or for Python < 3.8)")


def _read_tox_toml(c: Collector, doc: dict[str, Any], where: str) -> None:
    """tox ≥ 4.21 native TOML: ``env_run_base`` and test-running ``env.<name>`` tables."""
    tables = [("env_run_base", toml_table(doc, "env_run_base"))]
    tables += [(f"env.{name}", env) for name, env in toml_table(doc, "env").items() if _tox_env_wanted(name)]
    for name, table in tables:
        if not isinstance(table, dict) or not table:
            continue
        found = Found()
        # Non-string entries are tox replacements ({replace = "ref", ...}), which name other settings.
        _tox_deps(str_list(table.get("deps")), found)
        _tox_extras(str_list(table.get("extras")), found)
        c.apply(found, f"{where} [{name}]")


def read(c: Collector) -> None:
    pyproject = c.toml("pyproject.toml")
    tox_ini = c.ini("tox.ini")
    if tox_ini is not None:
        _read_tox_ini(c, tox_ini, "tox.ini")
    tox = toml_table(pyproject, "tool", "tox")
    legacy = tox.get("legacy_tox_ini")
    if isinstance(legacy, str):
        where = "pyproject.toml [tool.tox] legacy_tox_ini"
        cfg = c.parse_ini(legacy, where)
        if cfg is not None:
            _read_tox_ini(c, cfg, where)
    elif tox:
        _read_tox_toml(c, tox, "pyproject.toml [tool.tox]")
    tox_toml = c.toml("tox.toml")
    if tox_toml is not None:
        _read_tox_toml(c, tox_toml, "tox.toml")
