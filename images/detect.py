"""Read what a Python project declares and turn it into an install plan.

:func:`detect` reads packaging metadata (``pyproject.toml``, ``setup.cfg``, ``setup.py``, ``PKG-INFO``),
requirement files, tox and nox configuration, CI workflows and pytest configuration, and says what to
install so that the project's tests can run. It is heuristics only: files are parsed (``tomllib``,
``configparser``, ``ast``, regular expressions), never executed or imported, and nothing touches the
network. A file that cannot be read or parsed is skipped with an evidence line; :func:`detect` does not
raise for anything a repository contains.

Every decision leaves one line in :attr:`InstallPlan.evidence`, which build logs show to users.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shlex
import tomllib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import Any


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
    evidence: tuple[str, ...]
    """One human-readable line per decision, naming the file (and table or section) it rests on."""


# Names of extras, dependency groups, requirement files, CI jobs and tox/nox environments are matched
# by their words: "test-extras" and "requirements_dev" are test-ish, "docs-dev" is not.
_TEST_WORDS = frozenset({"test", "tests", "testing", "unittest", "unittests", "pytest"})
_DEV_WORDS = frozenset({"dev", "devel", "develop", "development"})
_CI_WORDS = frozenset({"ci", "check", "checks"})
#: Extras so named install everything; taken only when nothing test-ish exists and they are small.
_BROAD_WORDS = frozenset({"all", "full"})
_BROAD_EXTRA_MAX_REQUIREMENTS = 10
#: Words naming things the tests do not need; they win over test-ish words ("test-docs" is docs).
_EXCLUDED_WORDS = frozenset(
    {
        "doc",
        "docs",
        "documentation",
        "sphinx",
        "lint",
        "linting",
        "linter",
        "linters",
        "style",
        "format",
        "typing",
        "types",
        "type",
        "typecheck",
        "mypy",
        "pyright",
        "benchmark",
        "benchmarks",
        "bench",
        "release",
        "publish",
        "deploy",
        "pre-commit",
        "precommit",
    }
)
#: CI jobs and workflow files so named build or publish things rather than run the tests.
_CI_EXCLUDED_WORDS = _EXCLUDED_WORDS | {"pages", "wheel", "wheels", "sdist", "codeql", "stale", "labeler"}
#: Requirement files so named (besides plain ``requirements.txt``) hold the project's runtime needs.
_MAIN_REQUIREMENT_WORDS = frozenset({"base", "main", "common", "core", "default", "install", "runtime"})
_REQUIREMENT_FILE_WORDS = frozenset({"requirements", "requirement", "reqs", "req"})
#: Directories whose ``.py`` files do not make a repository a Python project on their own.
_NON_SOURCE_DIRS = frozenset({"tests", "test", "testing", "docs", "doc", "node_modules", "venv"})

#: Installers and CI tooling that CI commands install but the tests do not import.
_TOOLING = frozenset(
    {
        "pip",
        "setuptools",
        "wheel",
        "tox",
        "nox",
        "build",
        "twine",
        "codecov",
        "coveralls",
        "python-coveralls",
        "pre-commit",
        "uv",
        "pipx",
        "poetry",
        "hatch",
        "pdm",
        "flit",
        "virtualenv",
        "pip-tools",
    }
)
#: pip options whose value is the next argument (and is not a requirement).
_PIP_OPTIONS_WITH_VALUE = frozenset(
    {
        "-c",
        "--constraint",
        "-i",
        "--index-url",
        "--extra-index-url",
        "--index",
        "--default-index",
        "-f",
        "--find-links",
        "-t",
        "--target",
        "--prefix",
        "--root",
        "-p",
        "--python",
        "--platform",
        "--python-platform",
        "--python-version",
        "--implementation",
        "--abi",
        "--only-binary",
        "--no-binary",
        "-C",
        "--config-settings",
        "--global-option",
        "--install-option",
        "--trusted-host",
        "--cache-dir",
        "--progress-bar",
        "--upgrade-strategy",
        "--src",
        "--log",
        "--timeout",
        "--retries",
        "--proxy",
        "--cert",
        "--client-cert",
        "--exists-action",
        "--report",
        "--root-user-action",
        "--index-strategy",
        "--resolution",
        "--prerelease",
        "--extra",
        "--group",
        "--override",
        "--exclude-newer",
        "--link-mode",
        "--keyring-provider",
    }
)

#: pytest command-line options (and their ``-``-suffixed relatives) that only a plugin defines.
_OPTION_PLUGINS: tuple[tuple[str, str], ...] = (
    ("--cov", "pytest-cov"),
    ("--no-cov", "pytest-cov"),
    ("--numprocesses", "pytest-xdist"),
    ("--maxprocesses", "pytest-xdist"),
    ("--dist", "pytest-xdist"),
    ("--tx", "pytest-xdist"),
    ("--forked", "pytest-forked"),
    ("--timeout", "pytest-timeout"),
    ("--benchmark", "pytest-benchmark"),
    ("--reruns", "pytest-rerunfailures"),
    ("--only-rerun", "pytest-rerunfailures"),
    ("--mypy", "pytest-mypy"),
    ("--flake8", "pytest-flake8"),
    ("--flakes", "pytest-flakes"),
    ("--black", "pytest-black"),
    ("--isort", "pytest-isort"),
    ("--pylint", "pytest-pylint"),
    ("--ruff", "pytest-ruff"),
    ("--pycodestyle", "pytest-pycodestyle"),
    ("--html", "pytest-html"),
    ("--self-contained-html", "pytest-html"),
    ("--json-report", "pytest-json-report"),
    ("--hypothesis", "hypothesis"),
    ("--randomly", "pytest-randomly"),
    ("--mpl", "pytest-mpl"),
    ("--ds", "pytest-django"),
    ("--dc", "pytest-django"),
    ("--reuse-db", "pytest-django"),
    ("--create-db", "pytest-django"),
    ("--nomigrations", "pytest-django"),
    ("--no-migrations", "pytest-django"),
    ("--instafail", "pytest-instafail"),
    ("--doctest-plus", "pytest-doctestplus"),
    ("--doctest-rst", "pytest-doctestplus"),
    ("--remote-data", "pytest-remotedata"),
    ("--nbval", "nbval"),
    ("--nbval-lax", "nbval"),
    ("--disable-socket", "pytest-socket"),
    ("--allow-hosts", "pytest-socket"),
    ("--record-mode", "pytest-recording"),
    ("--block-network", "pytest-recording"),
    ("--memray", "pytest-memray"),
    ("--testmon", "pytest-testmon"),
    ("--asyncio-mode", "pytest-asyncio"),
    ("--codeblocks", "pytest-codeblocks"),
    ("--typeguard-packages", "typeguard"),
    ("--beartype-packages", "beartype"),
)
#: Modules named by ``-p MODULE`` that are plugins from a distribution of a different name.
_PLUGIN_MODULES = {
    "xdist": "pytest-xdist",
    "xdist.plugin": "pytest-xdist",
    "pytest_cov": "pytest-cov",
    "pytest_mock": "pytest-mock",
    "pytest_asyncio": "pytest-asyncio",
    "pytest_timeout": "pytest-timeout",
    "pytest_randomly": "pytest-randomly",
    "pytest_rerunfailures": "pytest-rerunfailures",
    "pytest_benchmark": "pytest-benchmark",
    "pytest_django": "pytest-django",
    "pytest_env": "pytest-env",
    "pytest_socket": "pytest-socket",
    "pytest_subtests": "pytest-subtests",
}
#: pytest configuration keys (lowercased) that only a plugin defines.
_INI_KEY_PLUGINS = {
    "timeout": "pytest-timeout",
    "timeout_method": "pytest-timeout",
    "timeout_func_only": "pytest-timeout",
    "asyncio_mode": "pytest-asyncio",
    "asyncio_default_fixture_loop_scope": "pytest-asyncio",
    "asyncio_default_test_loop_scope": "pytest-asyncio",
    "env": "pytest-env",
    "env_files": "pytest-dotenv",
    "mock_use_standalone_module": "pytest-mock",
    "mock_traceback_monkeypatch": "pytest-mock",
    "django_settings_module": "pytest-django",
    "django_find_project": "pytest-django",
    "reruns": "pytest-rerunfailures",
    "reruns_delay": "pytest-rerunfailures",
    "trio_mode": "pytest-trio",
    "qt_api": "pytest-qt",
    "doctest_plus": "pytest-doctestplus",
    "doctest_rst": "pytest-doctestplus",
    "bdd_features_base_dir": "pytest-bdd",
}

# A PEP 508 requirement, loosely: a name, optional extras, then nothing, a version specifier, a direct
# URL (``@ ...``) and/or markers. Enough to tell specifiers from paths, URLs and shell words.
_REQUIREMENT_RE = re.compile(
    r"""(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*
        (?:\[(?P<extras>[^\]]*)\])?\s*
        (?:@.+?|[(<>=!~][^;]*?)?\s*
        (?:;\s*(?P<marker>.+))?""",
    re.VERBOSE,
)
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")
#: The project itself, as an installer argument: ``.``, ``./``, ``.[a,b]``.
_SELF_RE = re.compile(r"\./?(?:\[(?P<extras>[^\]]*)\])?")
#: A requirement-file line that installs only the project itself.
_SELF_LINE_RE = re.compile(r"(?:(?:-e|--editable)(?:\s+|=)?)?[\"']?\./?(?:\[(?P<extras>[^\]]*)\])?[\"']?")
#: ``pip install`` as written in shell (``pip3 install``, ``python -m pip install``, ``uv pip install``).
_PIP_INSTALL_RE = re.compile(r"(?<![\w.-])pip[\d.]*\s+install(?![\w-])")
#: Words in a CI job that show it runs the tests (``pytest``, ``tox -e py``, ``make test``, ``make ci``).
_RUNS_TESTS_RE = re.compile(
    r"\b(?:py\.?test|tox|nox|unittest|tests?|testing|trial|coverage|ci)\b", re.IGNORECASE
)
_GHA_EXPRESSION_RE = re.compile(r"\$\{\{.*?\}\}")
_SHELL_COMMENT_RE = re.compile(r"(?:^|\s)#.*$")
#: A tox factor condition before a dependency (``py38: pytest<8``, ``!pypy,django{32,42}: x``).
_TOX_FACTOR_RE = re.compile(r"!?\w[\w.{},!-]*:\s")
#: A tox reference to another setting, ``{[section]key}``.
_TOX_REFERENCE_RE = re.compile(r"\{\[([^\]]+)\]([\w-]+)\}")
_EXTRA_MARKER_RE = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def detect(root: Path) -> InstallPlan:
    """Read what the project at ``root`` declares and return its install plan.

    Only files are read; no project code runs, and a malformed file is skipped with an evidence line.
    """
    c = _Collector(root)
    is_python = _is_python(c)
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
    installable = _installable(c, pyproject)

    for specs, where in tests_require:
        if specs:
            _add_declared(c, specs, where)
    if pyproject is not None:
        _read_dependency_groups(c, pyproject)
        _read_poetry_dev(c, pyproject)
        _read_pdm_dev(c, pyproject)
        _read_uv_dev(c, pyproject)
        _read_hatch_envs(c, _table(pyproject, "tool", "hatch", "envs"), "pyproject.toml [tool.hatch.envs.{}]")
    hatch = c.toml("hatch.toml")
    if hatch is not None:
        _read_hatch_envs(c, _table(hatch, "envs"), "hatch.toml [envs.{}]")
    _read_requirement_files(c)
    _read_tox(c, pyproject)
    _read_noxfile(c)
    _read_ci(c)
    test_paths = _read_pytest_config(c, pyproject)
    if is_python:
        if not c.has_package("pytest"):
            c.add_packages(["pytest"], "always installed to run the tests")
    else:
        c.note("nothing to install: not a Python project")
    pytest_args = _pytest_args(c, test_paths)
    # Last: CI commands and tox environments may have asked for extras too.
    extras = c.chosen_extras()

    return InstallPlan(
        is_python=is_python,
        installable=installable,
        name=c.scalars.get("name"),
        version=c.scalars.get("version"),
        requires_python=c.scalars.get("requires-python"),
        build_backend=c.scalars.get("build backend"),
        extras=extras,
        dependency_groups=tuple(c.groups),
        requirement_files=tuple(c.requirement_files),
        packages=tuple(c.packages.values()),
        test_paths=test_paths,
        pytest_args=pytest_args,
        evidence=tuple(c.evidence),
    )


# --- collecting -------------------------------------------------------------------------------------


@dataclass
class _Extra:
    """An extra as one source mentions it."""

    name: str
    where: str
    size: int | None = None
    """How many requirements it lists; None when unknown or when it pulls in other extras of the project."""


@dataclass
class _Found:
    """What installer arguments (a CI command, a nox ``session.install``, a tox ``deps`` line) ask for."""

    packages: list[str] = field(default_factory=list)
    requirement_files: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Collector:
    """The plan as it accumulates, with its evidence; first declaration wins throughout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.evidence: list[str] = []
        self.scalars: dict[str, str] = {}
        self.project_names: set[str] = set()
        self.declared_extras: dict[str, _Extra] = {}
        self.declaring_sources: list[str] = []
        self.requested_extras: list[_Extra] = []
        self.groups: list[str] = []
        self.requirement_files: list[str] = []
        #: (normalized name, normalized marker) → specifier, in the order first seen.
        self.packages: dict[tuple[str, str], str] = {}
        self._toml: dict[str, dict[str, Any] | None] = {}
        self._ini: dict[str, configparser.ConfigParser | None] = {}

    def note(self, line: str) -> None:
        self.evidence.append(line)

    # Parsed files, each read once so that a malformed one is reported once.

    def text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist or cannot be read (reported)."""
        path = self.root / rel
        if not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8-sig", errors="replace")
        except OSError as exc:
            self.note(f"{rel} skipped: unreadable ({exc.strerror or exc})")
            return None

    def toml(self, rel: str) -> dict[str, Any] | None:
        if rel not in self._toml:
            text = self.text(rel)
            doc = None
            if text is not None:
                try:
                    doc = tomllib.loads(text)
                except tomllib.TOMLDecodeError as exc:
                    self.note(f"{rel} skipped: malformed TOML ({exc})")
            self._toml[rel] = doc
        return self._toml[rel]

    def ini(self, rel: str) -> configparser.ConfigParser | None:
        if rel not in self._ini:
            text = self.text(rel)
            self._ini[rel] = None if text is None else self.parse_ini(text, rel)
        return self._ini[rel]

    def parse_ini(self, text: str, where: str) -> configparser.ConfigParser | None:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(text, source=where)
        except configparser.Error as exc:
            first_line = str(exc).splitlines()[0]
            self.note(f"{where} skipped: malformed INI ({first_line})")
            return None
        return parser

    # The plan's fields.

    def set_scalar(self, label: str, value: object, where: str) -> None:
        """Set ``label`` (``name``, ``version``, ...) unless an earlier source did; ignore non-strings."""
        if not isinstance(value, str) or not value.strip():
            return
        value = value.strip()
        if label == "name":
            self.project_names.add(_normalize(value))
        if label not in self.scalars:
            self.scalars[label] = value
            self.note(f"{label} {value}: {where}")

    def declare_extras(self, extras: Iterable[_Extra], where: str) -> None:
        self.declaring_sources.append(where)
        for extra in extras:
            self.declared_extras.setdefault(_normalize(extra.name), extra)

    def request_extras(self, names: Iterable[str], where: str) -> None:
        self.requested_extras.extend(_Extra(name.strip(), where) for name in names if name.strip())

    def add_group(self, name: str) -> None:
        if name not in self.groups:
            self.groups.append(name)

    def has_package(self, name: str) -> bool:
        """Whether some specifier for distribution ``name`` is listed already."""
        return any(listed == _normalize(name) for listed, _ in self.packages)

    def add_packages(self, specs: Iterable[str], where: str) -> None:
        """Add requirement specifiers, dropping the project itself and ones already listed."""
        added: list[str] = []
        repeated: list[str] = []
        itself: list[str] = []
        for spec in specs:
            key = _requirement_key(spec)
            if key is None:
                continue
            if key[0] in self.project_names:
                itself.append(spec)
            elif key in self.packages:
                repeated.append(spec)
            else:
                self.packages[key] = spec
                added.append(spec)
        notes = []
        if repeated:
            notes.append(f"already listed: {', '.join(repeated)}")
        if itself:
            notes.append(f"the project itself: {', '.join(itself)}")
        if added:
            self.note(f"packages {', '.join(added)}: {where}" + "".join(f"; {n}" for n in notes))
        elif notes:
            self.note(f"packages from {where}: {'; '.join(notes)}")

    def add_requirement_file(self, rel: str, where: str) -> None:
        """Add a requirement file named by a tool or CI command, if it exists and is worth installing."""
        path = _relative_path(rel)
        if path is None or not (self.root / path).is_file():
            self.note(f"requirement file {rel} not found: {where}")
            return
        if path in self.requirement_files:
            return
        if _words(PurePosixPath(path).stem) & _EXCLUDED_WORDS:
            self.note(f"requirement file {path} not installed (not needed for tests): {where}")
            return
        if self.self_only(path):
            return
        self.requirement_files.append(path)
        self.note(f"requirement file {path}: {where}")

    def self_only(self, rel: str) -> bool:
        """Whether the requirement file installs nothing but the project; its extras are requested."""
        text = self.text(rel)
        if text is None:
            return True
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        matches = [_SELF_LINE_RE.fullmatch(line) for line in lines]
        if not all(matches):
            return False
        extras = [e for m in matches if m and m["extras"] for e in m["extras"].split(",")]
        if extras:
            self.request_extras(extras, f"{rel} (installs the project itself)")
        what = "only the project itself" if lines else "nothing"
        self.note(f"requirement file {rel} not installed: it lists {what}")
        return True

    def apply(self, found: _Found, where: str) -> None:
        """Record what installer arguments found at ``where`` ask for."""
        self.add_packages(found.packages, where)
        for rel in found.requirement_files:
            self.add_requirement_file(rel, where)
        self.request_extras(found.extras, where)
        if found.skipped:
            self.note(f"skipped in {where}: {', '.join(found.skipped)}")

    def chosen_extras(self) -> tuple[str, ...]:
        """The extras to install, test-ish ones first; records the decision for each source."""
        chosen: dict[str, tuple[int, int, str]] = {}  # normalized name → (tier, order, display name)
        by_source: dict[str, list[str]] = {}
        for order, (key, extra) in enumerate(self.declared_extras.items()):
            tier = _tier(extra.name)
            if tier is not None:
                chosen[key] = (tier, order, extra.name)
                by_source.setdefault(extra.where, []).append(extra.name)
        for order, extra in enumerate(self.requested_extras, start=len(self.declared_extras)):
            key = _normalize(extra.name)
            declared = self.declared_extras.get(key)
            if _words(extra.name) & _EXCLUDED_WORDS:
                self.note(f"extra {extra.name} not installed (not needed for tests): {extra.where}")
            elif self.declared_extras and declared is None:
                self.note(f"extra {extra.name} not installed: not declared, though {extra.where} asks for it")
            else:
                name = declared.name if declared else extra.name
                tier = _tier(name)
                chosen.setdefault(key, (3 if tier is None else tier, order, name))
                by_source.setdefault(extra.where, []).append(name)
        broad_notes = []
        broad_considered = set()
        if not chosen:
            for order, (key, extra) in enumerate(self.declared_extras.items()):
                if not _words(extra.name) & _BROAD_WORDS or _words(extra.name) & _EXCLUDED_WORDS:
                    continue
                broad_considered.add(key)
                if extra.size is not None and extra.size <= _BROAD_EXTRA_MAX_REQUIREMENTS:
                    chosen[key] = (4, order, extra.name)
                    broad_notes.append(
                        f"extras {extra.name}: {extra.where} (no test extra, and it lists only "
                        f"{extra.size} requirements)"
                    )
                else:
                    broad_notes.append(
                        f"extra {extra.name} not installed: no test extra, but it is large or pulls in "
                        f"other extras: {extra.where}"
                    )
        for where in dict.fromkeys([*self.declaring_sources, *by_source]):
            if where in by_source:
                self.note(f"extras {', '.join(dict.fromkeys(by_source[where]))}: {where}")
            declined = [
                extra.name
                for key, extra in self.declared_extras.items()
                if extra.where == where and key not in chosen and key not in broad_considered
            ]
            if declined:
                self.note(f"extras {', '.join(declined)} not installed (not test-related): {where}")
        self.evidence.extend(broad_notes)
        return tuple(name for _, _, name in sorted(chosen.values()))


# --- small helpers ------------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    """The PEP 503 normalized form of a distribution (or extra) name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def _words(name: str) -> frozenset[str]:
    """The words of a name, plus adjacent pairs joined by "-" (so "pre_commit" has "pre-commit")."""
    tokens = _tokens(name)
    return frozenset(tokens) | {f"{a}-{b}" for a, b in pairwise(tokens)}


def _tier(name: str) -> int | None:
    """0 for test words, 1 for dev words, 2 for CI words, None when excluded or none of these."""
    words = _words(name)
    if words & _EXCLUDED_WORDS:
        return None
    for tier, vocabulary in enumerate((_TEST_WORDS, _DEV_WORDS, _CI_WORDS)):
        if words & vocabulary:
            return tier
    return None


def _requirement_match(spec: str) -> re.Match[str] | None:
    spec = spec.strip()
    if spec.lower().endswith(_ARCHIVE_SUFFIXES):
        return None
    return _REQUIREMENT_RE.fullmatch(spec)


def _requirement_key(spec: str) -> tuple[str, str] | None:
    """(normalized name, normalized marker): requirements differing only in markers are kept apart."""
    match = _requirement_match(spec)
    if match is None:
        return None
    marker = re.sub(r"\s+", "", match["marker"] or "").replace('"', "'").lower()
    return _normalize(match["name"]), marker


def _without_version(spec: str) -> str:
    """The specifier without its version constraint or URL; extras and markers are kept."""
    match = _requirement_match(spec)
    if match is None:
        return spec
    extras = f"[{match['extras']}]" if match["extras"] is not None else ""
    marker = f"; {match['marker']}" if match["marker"] else ""
    return f"{match['name']}{extras}{marker}"


def _relative_path(rel: str) -> str | None:
    """``rel`` as a normalized POSIX path inside the root, or None when it leaves it or is absolute."""
    path = PurePosixPath(os.path.normpath(rel.replace("\\", "/")).replace("\\", "/"))
    if path.is_absolute() or not path.parts or path.parts[0] == "..":
        return None
    return path.as_posix()


def _table(doc: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    """The nested table at ``keys``, or {} when absent or not a table."""
    node: Any = doc
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, dict) else {}


def _str_list(value: object) -> list[str]:
    """The strings of a list value (a lone string counts as a list of one)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def _declared_requirements(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split declared requirement strings into specifiers and skipped entries (with why)."""
    specs: list[str] = []
    skipped: list[str] = []
    for item in items:
        item = item.strip()
        if "{" in item or "$" in item:
            skipped.append(f"{item} (substitution)")
        elif _requirement_match(item) is None:
            skipped.append(f"{item} (not a requirement specifier)")
        else:
            specs.append(item)
    return specs, skipped


def _add_declared(c: _Collector, items: Iterable[str], where: str) -> None:
    specs, skipped = _declared_requirements(items)
    c.add_packages(specs, where)
    if skipped:
        c.note(f"skipped in {where}: {', '.join(skipped)}")


def _extra_size(requirements: list[str], project_names: set[str]) -> int | None:
    """How many requirements an extra lists; None when it also pulls in other extras of the project."""
    for spec in requirements:
        key = _requirement_key(spec)
        if key is not None and key[0] in project_names:
            return None
    return len(requirements)


def _select_named(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split group/environment names into test-related ones (test-ish first) and the rest."""
    ranked = []
    rest = []
    for order, name in enumerate(names):
        tier = _tier(name)
        if tier is None:
            rest.append(name)
        else:
            ranked.append((tier, order, name))
    return [name for _, _, name in sorted(ranked)], rest


# --- project metadata -------------------------------------------------------------------------------


def _installable(c: _Collector, pyproject: dict[str, Any] | None) -> bool:
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
    backend = _table(pyproject, "build-system").get("build-backend")
    if isinstance(backend, str) and backend.strip():
        c.set_scalar("build backend", backend, "pyproject.toml [build-system] build-backend")
    else:
        c.set_scalar("build backend", "setuptools.build_meta:__legacy__", "none declared, so pip's fallback")
    return True


def _is_python(c: _Collector) -> bool:
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


def _read_pep621(c: _Collector, doc: dict[str, Any]) -> None:
    project = _table(doc, "project")
    dynamic = _str_list(project.get("dynamic"))
    c.set_scalar("name", project.get("name"), "pyproject.toml [project] name")
    if "version" not in dynamic:
        c.set_scalar("version", project.get("version"), "pyproject.toml [project] version")
    c.set_scalar(
        "requires-python", project.get("requires-python"), "pyproject.toml [project] requires-python"
    )
    optional = _table(project, "optional-dependencies")
    if optional:
        extras = [
            _Extra(
                name,
                "pyproject.toml [project.optional-dependencies]",
                _extra_size(_str_list(reqs), c.project_names),
            )
            for name, reqs in optional.items()
        ]
        c.declare_extras(extras, "pyproject.toml [project.optional-dependencies]")
    dynamic_optional = _table(doc, "tool", "setuptools", "dynamic", "optional-dependencies")
    if "optional-dependencies" in dynamic and dynamic_optional:
        where = "pyproject.toml [tool.setuptools.dynamic.optional-dependencies]"
        c.declare_extras([_Extra(name, where) for name in dynamic_optional], where)


def _read_poetry_metadata(c: _Collector, doc: dict[str, Any]) -> None:
    poetry = _table(doc, "tool", "poetry")
    if not poetry:
        return
    c.set_scalar("name", poetry.get("name"), "pyproject.toml [tool.poetry] name")
    c.set_scalar("version", poetry.get("version"), "pyproject.toml [tool.poetry] version")
    python = _table(poetry, "dependencies").get("python")
    if isinstance(python, str):
        c.set_scalar(
            "requires-python", _poetry_constraint(python), "pyproject.toml [tool.poetry.dependencies] python"
        )
    extras = _table(poetry, "extras")
    if extras:
        where = "pyproject.toml [tool.poetry.extras]"
        c.declare_extras([_Extra(name, where, len(_str_list(reqs))) for name, reqs in extras.items()], where)


def _read_flit_metadata(c: _Collector, doc: dict[str, Any]) -> None:
    """Flit's pre-PEP 621 ``[tool.flit.metadata]`` table, which flit_core still builds from."""
    flit = _table(doc, "tool", "flit", "metadata")
    if not flit:
        return
    c.set_scalar("name", flit.get("dist-name") or flit.get("module"), "pyproject.toml [tool.flit.metadata]")
    c.set_scalar("requires-python", flit.get("requires-python"), "pyproject.toml [tool.flit.metadata]")
    extras = _table(flit, "requires-extra")
    if extras:
        where = "pyproject.toml [tool.flit.metadata.requires-extra]"
        c.declare_extras(
            [
                _Extra(name, where, _extra_size(_str_list(reqs), c.project_names))
                for name, reqs in extras.items()
            ],
            where,
        )


def _cfg_list(value: str) -> list[str]:
    """A setuptools list option: one item per line, or ``;``-separated on a single line."""
    items = value.splitlines() if "\n" in value.strip() else value.split(";")
    return [item.strip() for item in items if item.strip() and not item.strip().startswith("#")]


def _read_setup_cfg_metadata(c: _Collector, cfg: configparser.ConfigParser) -> list[str]:
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
            _Extra(name, where, _extra_size(_cfg_list(value), c.project_names))
            for name, value in cfg.items("options.extras_require")
        ]
        c.declare_extras(extras, where)
    return _cfg_list(cfg.get("options", "tests_require", fallback=""))


def _parse_python(c: _Collector, rel: str) -> ast.Module | None:
    """The syntax tree of a Python file, or None when it is absent or does not parse (reported)."""
    text = c.text(rel)
    if text is None:
        return None
    try:
        # Old setup.py files are full of invalid escapes; their warnings are not the user's concern.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text, filename=rel)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        c.note(f"{rel} skipped: cannot be parsed ({exc.__class__.__name__}: {exc})")
        return None


def _read_setup_py(c: _Collector) -> dict[str, Any] | None:
    """The literal keyword arguments of setup.py's ``setup(...)`` call; None without setup.py.

    A keyword whose value is a module-level name bound to a literal (``extras_require=EXTRAS``) counts
    as that literal; anything computed is left out.
    """
    tree = _parse_python(c, "setup.py")
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


def _read_setup_py_metadata(c: _Collector, kwargs: dict[str, Any]) -> list[str]:
    """Read setup.py's literal metadata and extras; return its ``tests_require``."""
    c.set_scalar("name", kwargs.get("name"), "setup.py setup(name=...)")
    c.set_scalar("version", kwargs.get("version"), "setup.py setup(version=...)")
    c.set_scalar("requires-python", kwargs.get("python_requires"), "setup.py setup(python_requires=...)")
    extras_require = kwargs.get("extras_require")
    if isinstance(extras_require, dict):
        where = "setup.py setup(extras_require=...)"
        extras = [
            _Extra(name, where, _extra_size(_str_list(reqs), c.project_names))
            for name, reqs in extras_require.items()
            if isinstance(name, str)
        ]
        c.declare_extras(extras, where)
    return _str_list(kwargs.get("tests_require"))


def _read_pkg_info(c: _Collector) -> Message | None:
    text = c.text("PKG-INFO")
    return None if text is None else HeaderParser().parsestr(text)


def _read_pkg_info_metadata(c: _Collector, info: Message) -> None:
    """An sdist's ``PKG-INFO``: the metadata as it was when the sdist was built."""
    c.set_scalar("name", info.get("Name"), "PKG-INFO Name")
    c.set_scalar("version", info.get("Version"), "PKG-INFO Version")
    c.set_scalar("requires-python", info.get("Requires-Python"), "PKG-INFO Requires-Python")
    extras = [str(name) for name in info.get_all("Provides-Extra") or []]
    if extras:
        sizes: dict[str, int] = {}
        for requirement in info.get_all("Requires-Dist") or []:
            for extra in _EXTRA_MARKER_RE.findall(str(requirement)):
                sizes[_normalize(extra)] = sizes.get(_normalize(extra), 0) + 1
        where = "PKG-INFO Provides-Extra"
        c.declare_extras([_Extra(name, where, sizes.get(_normalize(name), 0)) for name in extras], where)


# --- development dependencies declared in pyproject.toml --------------------------------------------


def _read_dependency_groups(c: _Collector, doc: dict[str, Any]) -> None:
    groups = _table(doc, "dependency-groups")
    if not groups:
        return
    chosen, rest = _select_named(groups)
    for name in chosen:
        c.add_group(name)
    if chosen:
        c.note(f"dependency groups {', '.join(chosen)}: pyproject.toml [dependency-groups]")
    if rest:
        c.note(f"dependency groups {', '.join(rest)} not installed (not test-related): pyproject.toml")


def _poetry_constraint(text: str) -> str:
    """A Poetry version constraint as a PEP 440 specifier (caret and tilde keep only their lower bound)."""
    text = text.strip()
    # An alternative ("^1 || ^2") has no single PEP 440 form; leaving it open lets pip choose.
    if not text or text == "*" or "||" in text:
        return ""
    parts = [p.replace(" ", "") for p in re.split(r"\s*,\s*|\s+(?=[<>=!~^])", text) if p.strip()]
    specifiers = []
    for part in parts:
        if part.startswith("^") or (part.startswith("~") and not part.startswith("~=")):
            specifiers.append(">=" + part[1:])
        elif part.startswith("=") and not part.startswith("=="):
            specifiers.append("=" + part)
        elif part[0] in "<>=!~":
            specifiers.append(part)
        else:
            specifiers.append("==" + part)
    return ",".join(specifiers)


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
        extras = _str_list(value.get("extras"))
        markers = value.get("markers")
        value = value.get("version", "*")
    if not isinstance(value, str):
        return None
    spec = name + (f"[{','.join(extras)}]" if extras else "") + _poetry_constraint(value)
    return f"{spec}; {markers}" if isinstance(markers, str) and markers.strip() else spec


def _add_poetry_table(c: _Collector, table: dict[str, Any], where: str) -> None:
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


def _read_poetry_dev(c: _Collector, doc: dict[str, Any]) -> None:
    poetry = _table(doc, "tool", "poetry")
    legacy = _table(poetry, "dev-dependencies")
    if legacy:
        _add_poetry_table(c, legacy, "pyproject.toml [tool.poetry.dev-dependencies]")
    groups = _table(poetry, "group")
    chosen, rest = _select_named(groups)
    for name in chosen:
        where = f"pyproject.toml [tool.poetry.group.{name}.dependencies]"
        _add_poetry_table(c, _table(groups, name, "dependencies"), where)
    if rest:
        c.note(f"poetry groups {', '.join(rest)} not installed (not test-related): pyproject.toml")


def _read_pdm_dev(c: _Collector, doc: dict[str, Any]) -> None:
    groups = _table(doc, "tool", "pdm", "dev-dependencies")
    chosen, rest = _select_named(groups)
    for name in chosen:
        _add_declared(c, _str_list(groups[name]), f"pyproject.toml [tool.pdm.dev-dependencies] {name}")
    if rest:
        c.note(f"pdm dev groups {', '.join(rest)} not installed (not test-related): pyproject.toml")


def _read_uv_dev(c: _Collector, doc: dict[str, Any]) -> None:
    dev = _str_list(_table(doc, "tool", "uv").get("dev-dependencies"))
    if dev:
        _add_declared(c, dev, "pyproject.toml [tool.uv] dev-dependencies")


def _read_hatch_envs(c: _Collector, envs: dict[str, Any], where_template: str) -> None:
    """Hatch's default and test environments: their dependencies, and ``features`` (extras)."""
    for name, env in envs.items():
        if not isinstance(env, dict) or (name not in ("default", "hatch-test") and _tier(name) is None):
            continue
        where = where_template.format(name)
        for key in ("dependencies", "extra-dependencies"):
            items = _str_list(env.get(key))
            if items:
                _add_declared(c, items, f"{where} {key}")
        c.request_extras(_str_list(env.get("features")), f"{where} features")


# --- requirement files --------------------------------------------------------------------------------


def _requirement_file_candidates(root: Path) -> list[str]:
    """Requirement files by their conventional names, ``.in`` ones only without a ``.txt`` twin."""
    found: list[str] = []
    pattern = re.compile(r"(?:requirements.*|.*[-_]requirements)\.(?:txt|in)", re.IGNORECASE)
    places = [("", pattern), ("requirements", re.compile(r".*\.(?:txt|in)", re.IGNORECASE))]
    places += [(d, re.compile(r"requirements.*\.(?:txt|in)", re.IGNORECASE)) for d in ("tests", "test")]
    for folder, name_re in places:
        directory = root / folder
        if not directory.is_dir():
            continue
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if not entry.is_file() or not name_re.fullmatch(entry.name):
                continue
            if entry.suffix.lower() == ".in" and entry.with_suffix(".txt").is_file():
                continue
            found.append(entry.relative_to(root).as_posix())
    return found


def _requirement_file_role(rel: str) -> str | None:
    """What a discovered requirement file is for: "main", "test", or None (docs, lint, unrecognized)."""
    path = PurePosixPath(rel)
    tokens = [t for t in _tokens(path.stem) if t not in _REQUIREMENT_FILE_WORDS]
    words = _words(path.stem)
    if words & _EXCLUDED_WORDS:
        return None
    if path.parts[0] in ("tests", "test") or _tier(path.stem) is not None:
        return "test"
    if all(token in _MAIN_REQUIREMENT_WORDS for token in tokens):
        return "main"
    return None


def _read_requirement_files(c: _Collector) -> None:
    chosen: list[tuple[bool, str]] = []
    declined: list[str] = []
    for rel in _requirement_file_candidates(c.root):
        role = _requirement_file_role(rel)
        if role is None:
            declined.append(rel)
        elif not c.self_only(rel):
            chosen.append((role != "main", rel))
    chosen.sort()
    for _, rel in chosen:
        c.requirement_files.append(rel)
    if chosen:
        c.note(f"requirement files {', '.join(rel for _, rel in chosen)}: found by name")
    if declined:
        c.note(f"requirement files {', '.join(declined)} not installed (not for tests or runtime)")


# --- installer arguments (tox deps, nox session.install, CI pip install) -----------------------------


def _classify_target(text: str, found: _Found, *, tooling: bool) -> None:
    """Sort one requirement-like installer argument into ``found``.

    With ``tooling``, installers and CI helpers (pip, tox, codecov, ...) are skipped as well.
    """
    text = text.strip()
    if not text:
        return
    if "$" in text or "{" in text:
        found.skipped.append(f"{text} (substitution)")
        return
    self_match = _SELF_RE.fullmatch(text)
    if self_match:
        found.extras.extend(e for e in (self_match["extras"] or "").split(",") if e.strip())
        return
    key = _requirement_key(text)
    if key is None:
        found.skipped.append(f"{text} (not a requirement specifier)")
    elif tooling and (key[0] in _TOOLING or key[0].startswith("tox-")):
        found.skipped.append(f"{text} (tooling)")
    else:
        found.packages.append(text)


def _pip_arguments(tokens: list[str], found: _Found, *, tooling: bool = True) -> None:
    """Sort the arguments of one ``pip install`` (or nox ``session.install``) into ``found``."""
    it = iter(tokens)
    for token in it:
        if token in ("-r", "--requirement", "--requirements"):
            value = next(it, None)
            if value is not None:
                _requirement_argument(value, found)
        elif token.startswith(("--requirement=", "--requirements=")):
            _requirement_argument(token.split("=", 1)[1], found)
        elif token.startswith("-r") and not token.startswith("--"):
            _requirement_argument(token[2:], found)
        elif token in ("-e", "--editable"):
            value = next(it, None)
            if value is not None:
                _classify_target(value, found, tooling=tooling)
        elif token.startswith("--editable="):
            _classify_target(token.split("=", 1)[1], found, tooling=tooling)
        elif token.startswith("-e") and not token.startswith("--"):
            _classify_target(token[2:], found, tooling=tooling)
        elif token in _PIP_OPTIONS_WITH_VALUE:
            next(it, None)
        elif not token.startswith("-"):
            _classify_target(token, found, tooling=tooling)


def _requirement_argument(value: str, found: _Found) -> None:
    value = value.strip().strip("\"'")
    if "$" in value or "{" in value:
        found.skipped.append(f"-r {value} (substitution)")
    else:
        found.requirement_files.append(value)


def _shell_words(text: str) -> list[str]:
    """The words of a shell command up to its end (``&&``, ``;``, ``|``, ``)``, comment)."""
    # ``${{ matrix.x }}`` without its spaces stays one word, reported as it was written.
    text = _GHA_EXPRESSION_RE.sub(lambda m: re.sub(r"\s+", "", m[0]), text)
    text = _SHELL_COMMENT_RE.sub("", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        words = list(lexer)
    except ValueError:
        # An unbalanced quote, typically YAML quoting around the whole command: drop the quotes.
        words = text.replace('"', " ").replace("'", " ").split()
    for index, word in enumerate(words):
        if word and all(ch in ";&|()" for ch in word):
            return words[:index]
    return words


# --- tox -------------------------------------------------------------------------------------------


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


def _tox_deps(lines: Iterable[str], found: _Found) -> None:
    for raw in lines:
        line = _SHELL_COMMENT_RE.sub("", raw).strip()
        if not line:
            continue
        if _TOX_FACTOR_RE.match(line):
            # Deps for particular factors belong to particular environments, often conflicting ones.
            found.skipped.append(f"{line} (factor-conditional)")
            continue
        for root in ("{toxinidir}", "{tox_root}"):
            line = line.replace(root + "/", "").replace(root, ".")
        if line.startswith(("-r", "--requirement")):
            _pip_arguments(line.split(), found, tooling=False)
        elif line.startswith(("-c", "--constraint")):
            continue
        elif line.startswith(("-e", "--editable")):
            _pip_arguments(line.split(None, 1), found, tooling=False)
        elif line.startswith("-"):
            found.skipped.append(f"{line} (installer option)")
        else:
            _classify_target(line, found, tooling=False)


def _tox_extras(lines: Iterable[str], found: _Found) -> None:
    for raw in lines:
        for item in re.split(r"[,\s]+", _SHELL_COMMENT_RE.sub("", raw).strip()):
            if not item:
                continue
            if ":" in item or "{" in item:
                found.skipped.append(f"extras {item} (factor-conditional or substitution)")
            else:
                found.extras.append(item)


def _read_tox_ini(c: _Collector, cfg: configparser.ConfigParser, where: str) -> None:
    declined = []
    for section in cfg.sections():
        if section != "testenv" and not section.startswith("testenv:"):
            continue
        if not _tox_env_wanted(section.removeprefix("testenv").removeprefix(":")):
            declined.append(section.removeprefix("testenv:"))
            continue
        found = _Found()
        _tox_deps(_tox_lines(cfg, section, "deps"), found)
        _tox_extras(_tox_lines(cfg, section, "extras"), found)
        c.apply(found, f"{where} [{section}]")
    if declined:
        c.note(f"{where} environments {', '.join(declined)} not read (not tests, or for Python < 3.8)")


def _read_tox_toml(c: _Collector, doc: dict[str, Any], where: str) -> None:
    """tox ≥ 4.21 native TOML: ``env_run_base`` and test-running ``env.<name>`` tables."""
    tables = [("env_run_base", _table(doc, "env_run_base"))]
    tables += [(f"env.{name}", env) for name, env in _table(doc, "env").items() if _tox_env_wanted(name)]
    for name, table in tables:
        if not isinstance(table, dict) or not table:
            continue
        found = _Found()
        # Non-string entries are tox replacements ({replace = "ref", ...}), which name other settings.
        _tox_deps(_str_list(table.get("deps")), found)
        _tox_extras(_str_list(table.get("extras")), found)
        c.apply(found, f"{where} [{name}]")


def _read_tox(c: _Collector, pyproject: dict[str, Any] | None) -> None:
    tox_ini = c.ini("tox.ini")
    if tox_ini is not None:
        _read_tox_ini(c, tox_ini, "tox.ini")
    tox = _table(pyproject, "tool", "tox")
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


# --- nox ---------------------------------------------------------------------------------------------


def _read_noxfile(c: _Collector) -> None:
    """``session.install("a", "-r", "f")`` calls with literal arguments, outside docs/lint sessions."""
    tree = _parse_python(c, "noxfile.py")
    if tree is None:
        return
    declined = []
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if _words(function.name) & _EXCLUDED_WORDS:
            declined.append(function.name)
            continue
        found = _Found()
        for node in ast.walk(function):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "install"
                and isinstance(node.func.value, ast.Name)
            ):
                continue
            tokens = []
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    tokens.append(arg.value)
                else:
                    found.skipped.append(f"{ast.unparse(arg)} (not a literal)")
            _pip_arguments(tokens, found)
        if found.packages or found.requirement_files or found.extras or found.skipped:
            c.apply(found, f"noxfile.py {function.name}() session.install")
    if declined:
        c.note(f"noxfile.py sessions {', '.join(declined)} not read (not test-related)")


# --- CI ----------------------------------------------------------------------------------------------


def _ci_jobs(text: str) -> list[tuple[str | None, str]]:
    """A workflow's text split into (job id, text) by the keys under ``jobs:``; (None, text) without."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(r"jobs:\s*(?:#.*)?", line)), None)
    if start is None:
        return [(None, text)]
    jobs: list[tuple[str | None, list[str]]] = []
    indent = None
    for line in lines[start + 1 :]:
        stripped = line.lstrip(" ")
        if not stripped.strip() or stripped.startswith("#"):
            continue
        depth = len(line) - len(stripped)
        if depth == 0:
            break
        if indent is None:
            indent = depth
        key = re.fullmatch(r"""["']?([\w.-]+)["']?\s*:\s*(?:#.*)?""", stripped)
        if depth == indent and key:
            jobs.append((key[1], []))
        elif jobs:
            jobs[-1][1].append(line)
    return [(name, "\n".join(body)) for name, body in jobs]


def _pip_installs(text: str) -> _Found:
    """What the ``pip install`` commands in a CI script ask for (``run: |`` blocks included)."""
    found = _Found()
    # Backslash continuations join lines the way the shell would.
    text = re.sub(r"\\[ \t]*\r?\n\s*", " ", text)
    for line in text.splitlines():
        # Each command's words end at its shell separator, so commands chained with && all count.
        for match in _PIP_INSTALL_RE.finditer(line):
            _pip_arguments(_shell_words(line[match.end() :]), found)
    return found


def _ci_files(c: _Collector) -> list[str]:
    """GitHub workflows; without any, the older CI configurations (Travis, GitLab, CircleCI)."""
    workflows = c.root / ".github" / "workflows"
    if workflows.is_dir():
        found = sorted(
            p.relative_to(c.root).as_posix()
            for p in workflows.iterdir()
            if p.suffix in (".yml", ".yaml") and p.is_file()
        )
        if found:
            return found
    # Older CI files of repositories that moved to GitHub Actions often pin long-gone versions: they
    # count only when there is no workflow.
    older = (".travis.yml", ".gitlab-ci.yml", ".circleci/config.yml")
    return [rel for rel in older if (c.root / rel).is_file()]


def _read_ci(c: _Collector) -> None:
    declined = []
    testless = []
    for rel in _ci_files(c):
        if _words(PurePosixPath(rel).stem) & _CI_EXCLUDED_WORDS:
            declined.append(rel)
            continue
        text = c.text(rel)
        if text is None:
            continue
        main_job_seen = False
        for job, body in _ci_jobs(text):
            label = f"{rel} job {job}" if job else rel
            if job is not None and _words(job) & _CI_EXCLUDED_WORDS:
                declined.append(label)
                continue
            # Jobs that run no tests (spell checks, issue bots) install nothing the tests need.
            if not _RUNS_TESTS_RE.search(body):
                testless.append(label)
                continue
            found = _pip_installs(body)
            where = f"{label} pip install"
            if main_job_seen:
                # Later jobs are mostly variants of the first (oldest versions, "urllib3 1.x"): what
                # they install counts, the versions they pin for their variant do not.
                loose = [_without_version(spec) for spec in found.packages]
                if loose != found.packages:
                    found.packages = loose
                    where += ", version constraints dropped (a variant of an earlier job)"
            main_job_seen = True
            if found.packages or found.requirement_files or found.extras or found.skipped:
                c.apply(found, where)
    if declined:
        c.note(f"CI {', '.join(declined)} not read (docs, lint or publishing)")
    if testless:
        c.note(f"CI {', '.join(testless)} not read (runs no tests)")


# --- pytest ------------------------------------------------------------------------------------------


def _pytest_config(c: _Collector, pyproject: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The configuration pytest would use, with where it is: files in pytest's own precedence order."""
    for rel in ("pytest.toml", ".pytest.toml"):
        if (c.root / rel).is_file():
            doc = c.toml(rel)
            return f"{rel} [pytest]", _table(doc, "pytest")
    for rel in ("pytest.ini", ".pytest.ini"):
        if (c.root / rel).is_file():
            # These files are pytest's even without a [pytest] section.
            cfg = c.ini(rel)
            return f"{rel} [pytest]", dict(cfg.items("pytest")) if cfg and cfg.has_section("pytest") else {}
    tool_pytest = _table(pyproject, "tool", "pytest")
    native = {key: value for key, value in tool_pytest.items() if key != "ini_options"}
    if native:
        return "pyproject.toml [tool.pytest]", native
    if "ini_options" in tool_pytest:
        return "pyproject.toml [tool.pytest.ini_options]", _table(tool_pytest, "ini_options")
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
        dist = None
        if option in ("-n", "--numprocesses") or re.fullmatch(r"-n(?:\d+|auto|logical)", arg):
            dist = "pytest-xdist"
        elif option == "-p" or (arg.startswith("-p") and len(arg) > 2 and not arg.startswith("--")):
            module = args[index + 1] if option == "-p" and index + 1 < len(args) else arg[2:]
            dist = _PLUGIN_MODULES.get(module.strip())
            trigger = f"-p {module}"
        else:
            dist = next((d for o, d in _OPTION_PLUGINS if option == o or option.startswith(o + "-")), None)
        if dist is not None:
            plugins.setdefault(dist, f"addopts {trigger}")
    for key in config:
        dist = _INI_KEY_PLUGINS.get(key.lower())
        if dist is not None:
            plugins.setdefault(dist, key)
    return plugins


def _read_pytest_config(c: _Collector, pyproject: dict[str, Any] | None) -> tuple[str, ...]:
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
            _add_declared(c, required, f"{where} required_plugins")
        for dist, trigger in _implied_plugins(config).items():
            if c.has_package(dist):
                c.note(f"{dist} implied by {where} {trigger}: already listed")
            else:
                c.add_packages([dist], f"implied by {where} {trigger}")
        declared = _config_words(config.get("testpaths", ""))
    if _table(pyproject, "tool", "pytest_env") and not c.has_package("pytest-env"):
        c.add_packages(["pytest-env"], "implied by pyproject.toml [tool.pytest_env]")
    if declared:
        existing = [path for path in map(_relative_path, declared) if path and _path_exists(c.root, path)]
        missing = [p for p in declared if _relative_path(p) not in existing]
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


def _pytest_args(c: _Collector, test_paths: tuple[str, ...]) -> tuple[str, ...]:
    """``--rootdir=.`` when pytest would otherwise take the test directory as its rootdir.

    Without any file pytest recognises at the root, running ``pytest tests`` makes ``tests`` the
    rootdir and test ids lose their ``tests/`` prefix; pinning the rootdir keeps ids stable whatever
    paths the runner passes.
    """
    anchors = ("setup.py", "pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml")
    anchors += ("tox.ini", "setup.cfg")
    if not test_paths or any((c.root / name).is_file() for name in anchors):
        return ()
    c.note("pytest args --rootdir=.: no file at the root that pytest anchors its rootdir (and test ids) to")
    return ("--rootdir=.",)


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
