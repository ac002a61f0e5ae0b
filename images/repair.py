"""From the log of a failed install or test step to the repairs worth trying next.

The builder runs an install step or a test collection; when it fails, :func:`diagnose` reads the log and
names the fixes it is sure enough of: install a missing distribution or pytest plugin, set an
environment variable, drop an extra, relax pinned versions, build without isolation, install without
``-e``. Nothing is run here; the builder applies a repair and runs the step again.

Recognition is a table of rules (:data:`RULES`): a regular expression and a handler that turns its match
into repairs. Logs of pip (23 to 26), uv, pytest, setuptools-scm and pbr are covered, in their exact
wording; adding a case is one more row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from images.forward_repair import ERROR as INTERPRETER_ERROR
from images.forward_repair import interpreter_change
from images.header_packages import (
    PIP_TOOLS,
    package_for_header,
    package_for_library,
    package_for_pkg_config,
    package_for_tool,
    pip_for_header,
)
from images.import_map import DISTRIBUTIONS, distribution_for
from images.pytest_plugins import FIXTURE_PLUGINS, MARKER_PLUGINS, ini_plugin, option_plugin

RepairKind = Literal[
    "install", "env", "drop_extra", "relax_pins", "no_build_isolation", "no_editable", "step_back",
    "step_forward", "apt", "build_ext",
]

#: Repairs that switch an install mode on for the whole command; their value only names what the log
#: blamed, so one of them is tried once whatever its value.
FLAG_KINDS: frozenset[RepairKind] = frozenset({"no_build_isolation", "no_editable"})

#: Longest ``why`` kept: enough to recognise the log line in a recipe or a report.
WHY_LENGTH = 200


@dataclass(frozen=True)
class Repair:
    """One fix to try, and the log line that justified it.

    ``value`` depends on ``kind``:

    - ``install``: a requirement to install (``pytest-mock``, ``psycopg[binary]``, ``pytest-cov>=4``);
    - ``env``: ``VAR=value`` to set for the step;
    - ``drop_extra``: an extra to remove from the project's install, spelled as the caller gave it;
    - ``relax_pins``: the pinned requirement that could not be installed (``numpy==1.19.5``);
    - ``no_build_isolation``: the distribution the build needed, to install before building without
      isolation (``numpy``);
    - ``no_editable``: the project whose editable build failed, as the log names it;
    - ``step_back``: an installed distribution too new for the project or its plugins (``pytest``), to
      replace with its newest release before the commit's date and older than the installed one;
    - ``step_forward``: an installed distribution too old for the interpreter (a standard-library name
      its code uses is gone), to replace with its oldest release that runs there
      (:mod:`images.forward_repair`);
    - ``apt``: Debian packages (space-separated) with a header, library or tool a native build lacked;
    - ``build_ext``: the project's package whose compiled module the checkout lacks (``yarl``): its
      extensions are to be built in place, for the tests import the checkout, not the installed copy.
    """

    kind: RepairKind
    value: str
    why: str


@dataclass(frozen=True)
class _Context:
    log: str
    extras: Sequence[str]
    version: str | None
    local: Mapping[str, str]


#: A handler turns a rule's match into (kind, value) pairs; the rule's line becomes their ``why``.
Handler = Callable[[re.Match[str], _Context], Iterable[tuple[RepairKind, str]]]


@dataclass(frozen=True)
class Rule:
    """A log pattern (multiline regular expression) and what to do about each of its matches."""

    pattern: re.Pattern[str]
    handler: Handler


def _rule(pattern: str, handler: Handler) -> Rule:
    return Rule(re.compile(pattern, re.MULTILINE), handler)


# -- lookup tables --------------------------------------------------------------------------------------

#: Top-level names that are the project's own or its tests', never a distribution to install.
_LOCAL_MODULES = frozenset({"test", "tests", "testing", "conftest", "src"})


# -- handlers -------------------------------------------------------------------------------------------


def _install(requirement: str) -> Handler:
    """Install ``requirement`` whenever the rule matches."""
    return lambda match, ctx: [("install", requirement)]


def _install_from(table: Mapping[str, str]) -> Handler:
    """Install what ``table`` says provides the match's ``name`` (nothing if it is not there)."""
    return lambda match, ctx: [("install", table[match["name"]])] if match["name"] in table else []


def _install_ini_plugin(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    plugin = ini_plugin(match["name"])
    return [("install", plugin)] if plugin else []


def _pretend_version(variable: str) -> Handler:
    """Set ``variable`` to the project's declared version, or 0.0.0 when it has none."""
    return lambda match, ctx: [("env", f"{variable}={ctx.version or '0.0.0'}")]


def _installable(module: str) -> str | None:
    """The distribution to install for a missing module, or None when installing cannot be the fix."""
    module = module.rstrip(".")
    parts = module.split(".")
    top = parts[0]
    if top in _LOCAL_MODULES or top.startswith(("test_", "tests_")):
        return None
    # A private top-level name is the standard library's or a package's internals (``_ssl``,
    # ``_pytest``): only known ones are installable.
    if top.startswith("_") and top not in DISTRIBUTIONS:
        return None
    # A missing private submodule (``pkg._version``, ``pkg._speedups``) means its package is unbuilt or
    # broken, which installing it again would not change.
    if any(part.startswith("_") for part in parts[1:]):
        return None
    return distribution_for(module)


def _missing_module(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    # "No module named 'a.b'; 'a' is not a package": ``a`` is installed, or shadowed by a local file.
    if match["not_package"]:
        return []
    top, _, rest = match["module"].partition(".")
    folder = ctx.local.get(top)
    if folder == ".":
        # The project's own: yarl._quoting_c is missing when a copy of the project was installed (no
        # editable build) and the tests import the checkout, whose extensions were never compiled. A
        # release of the project from the index would only hide the checkout.
        return [("build_ext", top)] if rest.split(".")[-1].startswith("_") else []
    if folder is not None:
        return [("install", folder)]  # a project inside the checkout (flask's examples) provides it
    distribution = _installable(match["module"])
    return [("install", distribution)] if distribution else []


#: A step of building a distribution failed (pip and uv wording).
_BUILD_FAILED = re.compile(
    r"did not run successfully|BackendUnavailable|backend-unavailable|The build backend returned an error"
    r"|Failed building (?:wheel|editable) for"
)


def _build_missing_module(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """A module missing inside a build backend: isolation hid it; install it and build without isolation."""
    repairs = _missing_module(match, ctx)
    if not repairs or not _BUILD_FAILED.search(ctx.log):
        return []
    return [("no_build_isolation", repairs[0][1]), *repairs]


@dataclass(frozen=True)
class _Target:
    """The distribution whose build failed, as the log names it."""

    name: str
    requirement: str | None  # as requested, when the log shows it ("oldpkg==1.0")
    local: bool  # the project itself, from a path or URL, rather than a dependency from an index


_SPECIFIER = re.compile(r"===|==|~=|!=|<=|>=|<|>")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Lines that say what pip or uv was working on, newest last.
_PROGRESS = re.compile(
    r"^\s*(?:(?P<collecting>Collecting) (?P<requirement>\S+)"
    r"|(?:Processing|Obtaining) (?P<path>\S+)"
    r"|Building (?!wheels? for |editable for )(?P<building>.+?))\s*$",
    re.MULTILINE,
)
_EDITABLE_FAILED = re.compile(
    r"Failed building editable for|\.build_editable` failed|missing the 'build_editable' hook"
)


def _name_pattern(name: str) -> str:
    """A regex for a distribution name as PyPI compares them: any case, ``-``, ``_`` and ``.`` alike."""
    return "(?i:" + "[-_.]+".join(re.escape(part) for part in re.split(r"[-_.]+", name)) + ")"


def _target(text: str, log: str) -> _Target:
    """Classify what a failure names: a requirement (uv), a distribution name (pip) or a path or URL."""
    if " @ " in text or "://" in text or text.startswith(("/", ".")):
        return _Target(text.split(" @ ")[0], None, local=True)
    name_match = _NAME.match(text)
    name = name_match[0] if name_match else text
    if _SPECIFIER.search(text):
        return _Target(name, text, local=False)
    collected = re.search(rf"^\s*Collecting ({_name_pattern(name)}(?:\[[^\]]*\])?\S*)", log, re.MULTILINE)
    if collected:
        return _Target(name, collected[1], local=False)
    return _Target(name, None, local=True)


def _target_before(position: int, log: str) -> _Target | None:
    """What pip or uv was working on at ``position``: the last progress line before it."""
    last = None
    for progress in _PROGRESS.finditer(log, 0, position):
        last = progress
    if last is None:
        return None
    if last["collecting"]:
        return _target(last["requirement"], log)
    return _target(last["path"] or last["building"], log)


def _build_failed(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """A distribution failed to build: install the project without ``-e`` if its editable build failed;
    for a dependency, relax its pin, then drop the project's extras (last first) that may pull it in."""
    named = match.groupdict().get("target")
    target = _target(named, ctx.log) if named else _target_before(match.start(), ctx.log)
    if target is None:
        return []
    if target.local:
        return [("no_editable", target.name)] if _EDITABLE_FAILED.search(ctx.log) else []
    repairs: list[tuple[RepairKind, str]] = []
    if target.requirement and _SPECIFIER.search(target.requirement):
        repairs.append(("relax_pins", target.requirement))
    repairs.extend(("drop_extra", extra) for extra in reversed(ctx.extras))
    return repairs


def _relax(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """No version satisfies a pinned requirement: relax the pins, unless no version exists at all."""
    requirement = match["requirement"].strip()
    name = _NAME.match(requirement)
    if name is None or not _SPECIFIER.search(requirement):
        return []
    pattern = _name_pattern(name[0])
    # pip: "(from versions: none)"; uv: "was not found in the package registry". No version of the
    # name is installable, so loosening the pin cannot help.
    unavailable = rf"requirement {pattern}\S* \(from versions: none\)|{pattern} was not found in the"
    if re.search(unavailable, ctx.log):
        return []
    return [("relax_pins", requirement)]


def _options(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """Unrecognized command-line options: install the plugins that add them."""
    plugins = (option_plugin(token) for token in match["arguments"].split() if token.startswith("-"))
    return [("install", plugin) for plugin in plugins if plugin]


def _required_plugins(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    return [("install", plugin.strip()) for plugin in match["plugins"].split(",") if plugin.strip()]


def _drop_extra(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """An extra the distribution does not provide: drop it, spelled as the caller gave it. An extra the
    caller did not ask for belongs to a dependency and is left alone."""
    extra = match["extra"]
    if not ctx.extras:
        return [("drop_extra", extra)]
    wanted = _normalize(extra)
    return [("drop_extra", given) for given in ctx.extras if _normalize(given) == wanted]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


#: A traceback frame: ``File "/path/mod.py", line 3`` (Python) or ``/path/mod.py:3: in f`` (pytest's
#: short form, also after ``INTERNALERROR>``).
_FRAME = re.compile(
    r'File "(?P<long>[^"]+)", line \d+|^(?:INTERNALERROR>\s*)?(?P<short>\S+\.py):\d+: in ', re.MULTILINE
)
#: The top-level name of an installed distribution's file.
_INSTALLED = re.compile(r"site-packages/(?P<top>[A-Za-z_]\w*)")
#: Distributions that only host the code that fails (pytest's hook caller), never its cause.
_HOSTS = frozenset({"pluggy"})
#: How far back from an error line its traceback is looked for.
_TRACEBACK_CHARS = 6000


def _step_back_import(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """``cannot import name 'x' from 'pkg' (.../site-packages/pkg/...)``: an installed release that no
    longer has the name the project imports."""
    if "site-packages/" not in match["path"]:
        return []
    distribution = distribution_for(match["module"])
    return [("step_back", distribution)] if distribution else []


def _step_back_raised(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """An ``AttributeError``/``ImportError`` naming a module of pytest's, or raised inside pytest or a
    plugin (the traceback's last frame is theirs), unless a newer interpreter explains it: an older
    release would not run there either."""
    if (changed := INTERPRETER_ERROR.search(match[0])) and interpreter_change(changed):
        return []
    module = match["module"]
    if module and _is_pytest_module(module.split(".")[0]):
        return [("step_back", distribution_for(module) or "pytest")]
    start = max(0, match.start() - _TRACEBACK_CHARS)
    frames = [f["long"] or f["short"] for f in _FRAME.finditer(ctx.log, start, match.start())]
    return _step_back_frames(frames)


def _step_back_internal(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """pytest's ``INTERNALERROR``: raised in pytest or a plugin, whose frames the error block shows."""
    start = max(0, match.start() - _TRACEBACK_CHARS)
    block = "\n".join(
        line for line in ctx.log[start : match.end()].splitlines() if line.startswith("INTERNALERROR>")
    )
    return _step_back_frames([f["long"] or f["short"] for f in _FRAME.finditer(block)])


def _step_back_frames(paths: list[str]) -> list[tuple[RepairKind, str]]:
    """When the innermost frame is in pytest or a plugin: pytest, then the innermost plugin frame's
    distribution (a plugin failing on pytest's internals usually means pytest moved on)."""
    tops = [m["top"] for path in paths if (m := _INSTALLED.search(path)) and m["top"] not in _HOSTS]
    innermost = next((path for path in reversed(paths) if "/pluggy/" not in path), None)
    if innermost is None or "site-packages/" not in innermost or not tops:
        return []
    plugins = [top for top in tops if top not in ("_pytest", "pytest")]
    if not _is_pytest_module(tops[-1]) and not (plugins and _is_pytest_module(plugins[-1])):
        return []
    steps = ["pytest"] + [d for d in [distribution_for(plugins[-1]) if plugins else None] if d]
    return [("step_back", name) for name in dict.fromkeys(steps)]


def _step_forward(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """An error a newer interpreter explains, raised in an installed distribution's code (the
    traceback's innermost frame is its file): that distribution, to step forward."""
    if interpreter_change(match) is None:
        return []
    start = max(0, match.start() - _TRACEBACK_CHARS)
    paths = [f["long"] or f["short"] for f in _FRAME.finditer(ctx.log, start, match.start())]
    innermost = next((path for path in reversed(paths) if not path.startswith("<")), None)
    installed = _INSTALLED.search(innermost) if innermost else None
    distribution = distribution_for(installed["top"]) if installed else None
    return [("step_forward", distribution)] if distribution else []


def _is_pytest_module(top: str) -> bool:
    return top in ("pytest", "_pytest", "py") or top.startswith("pytest_")


def _missing_header(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """A header the compiler did not find: its Debian package, or the distribution whose headers these
    are (numpy's), importable only when the build is not isolated."""
    if package := package_for_header(match["name"]):
        return [("apt", package)]
    distribution = pip_for_header(match["name"])
    return [("no_build_isolation", distribution)] if distribution else []


def _missing_tool(match: re.Match[str], ctx: _Context) -> list[tuple[RepairKind, str]]:
    """An executable the build ran and the shell did not find: its Debian package or its distribution."""
    if package := package_for_tool(match["name"]):
        return [("apt", package)]
    distribution = PIP_TOOLS.get(match["name"].lower())
    return [("install", distribution)] if distribution else []


def _apt_for(lookup: Callable[[str], str | None]) -> Handler:
    """Install with apt-get what ``lookup`` says provides the match's ``name`` (nothing if unknown)."""
    return lambda match, ctx: [("apt", package)] if (package := lookup(match["name"])) else []


def _apt(packages: str) -> Handler:
    return lambda match, ctx: [("apt", packages)]


_MODULE = r"No module named '?(?P<module>[A-Za-z_][\w.]*)'?(?P<not_package>; '[\w.]+' is not a package)?"

#: The rules, most specific first: the order of :func:`diagnose`'s answer follows it.
RULES: tuple[Rule, ...] = (
    # Native builds: a header, library, pkg-config module or tool that a Debian package provides.
    _rule(r"fatal error: (?P<name>[\w./+-]+): No such file or directory", _missing_header),
    _rule(r"fatal error: '(?P<name>[\w./+-]+)' file not found", _missing_header),
    _rule(r"cannot find -l(?P<name>[\w.+-]+)", _apt_for(package_for_library)),
    _rule(r"Package '?(?P<name>[\w.+-]+)'?,? (?:required by '[^']*', )?(?:was )?not found",
          _apt_for(package_for_pkg_config)),
    _rule(r"No package '(?P<name>[\w.+-]+)' found", _apt_for(package_for_pkg_config)),
    _rule(r"Dependency \"?(?P<name>[\w.+-]+)\"? not found", _apt_for(package_for_pkg_config)),
    _rule(r"(?P<name>pg_config) executable not found", _missing_tool),
    _rule(r"(?:OSError|Exception): (?P<name>[\w.+-]+_config) not found", _missing_tool),
    _rule(r"\bsh: (?:\d+: )?(?P<name>[\w.+-]+): (?:command )?not found", _missing_tool),
    _rule(r"^(?P<name>[\w.+-]+): command not found", _missing_tool),
    _rule(r"(?:error: command|unable to execute) '(?:/usr/bin/)?(?P<name>[\w.+-]+)'(?: failed)?: No such",
          _missing_tool),
    _rule(r"FileNotFoundError: \[Errno 2\] No such file or directory: '(?P<name>[\w.+-]+)'", _missing_tool),
    _rule(r"can't find Rust compiler|Cargo, the Rust package manager, is not installed", _apt("rustc cargo")),
    _rule(r"error: linker `(?P<name>[\w.+-]+)` not found", _missing_tool),
    _rule(r"(?i)cmake (?:must be installed|is not installed|executable not found)", _apt("cmake")),
    _rule(r"Can not find valid pkg-config name", _apt("default-libmysqlclient-dev")),
    # Versioning plugins that need git metadata the checkout may lack (setuptools-scm, hatch-vcs, pbr).
    _rule(r"unable to detect version(?! control)", _pretend_version("SETUPTOOLS_SCM_PRETEND_VERSION")),
    _rule(r"Versioning for this project requires either an sdist tarball", _pretend_version("PBR_VERSION")),
    # Builds: a module the build backend imports, unsatisfiable pins, failed builds.
    _rule(_MODULE, _build_missing_module),
    _rule(r"Could not find a version that satisfies the requirement (?P<requirement>\S+)", _relax),
    _rule(r"No matching distribution found for (?P<requirement>\S+)", _relax),
    _rule(r"you require (?P<requirement>.+?)(?:, | and |$)", _relax),
    _rule(r"Failed building (?:wheel|editable) for (?P<target>\S+)", _build_failed),
    _rule(r"Could not build wheels for (?P<target>[\w.-]+)", _build_failed),
    _rule(r"Failed to build '(?P<target>[^']+)' when", _build_failed),
    _rule(r"Failed to build `(?P<target>[^`]+)`", _build_failed),
    _rule(
        r"(?:Getting requirements to build (?:wheel|editable)|Preparing (?:editable )?metadata \(\S+\)"
        r"|python setup\.py egg_info) did not run successfully",
        _build_failed,
    ),
    _rule(
        r"Running setup\.py install for (?P<target>\S+?)(?: \.\.\. error| did not run successfully)",
        _build_failed,
    ),
    _rule(r"missing the 'build_editable' hook", _build_failed),
    _rule(r"Call to `\S+\.build_editable` failed", _build_failed),
    # Pytest refusing its command line or configuration (exit code 4): nothing runs until fixed.
    _rule(r"Missing required plugins: (?P<plugins>.+)", _required_plugins),
    _rule(r"error: unrecognized arguments: (?P<arguments>.+)", _options),
    # Installed releases older than the interpreter: step them forward.
    Rule(INTERPRETER_ERROR, _step_forward),
    # Installed releases newer than the project's code or its plugins expect: step them back.
    _rule(
        r"ImportError: cannot import name '\w+' from '(?P<module>[\w.]+)' \((?P<path>[^)]*)\)",
        _step_back_import,
    ),
    _rule(
        r"^(?:E\s+|INTERNALERROR>\s+)?(?:AttributeError|ImportError): (?:module '(?P<module>[\w.]+)' has no"
        r" attribute|(?!cannot import name|No module named)).*$",
        _step_back_raised,
    ),
    _rule(r"^INTERNALERROR> (?!\s)(?!Traceback)[\w.]*(?:Error|Exception|Warning)\b.*$", _step_back_internal),
    # Imports, fixtures, async tests and markers that a missing distribution or plugin explains.
    _rule(_MODULE, _missing_module),
    _rule(r"fixture '(?P<name>\w+)' not found", _install_from(FIXTURE_PLUGINS)),
    _rule(r"async def functions are not natively supported", _install("pytest-asyncio")),
    _rule(r"'(?P<name>\w+)' not found in `markers` configuration option", _install_from(MARKER_PLUGINS)),
    _rule(r"Unknown pytest\.mark\.(?P<name>\w+)", _install_from(MARKER_PLUGINS)),
    _rule(r"Unknown config option: (?P<name>\S+)", _install_ini_plugin),
    # A warning rather than a failure, so last: an extra the project does not have.
    _rule(r"does not provide the extra '(?P<extra>[^']+)'", _drop_extra),
    _rule(r"does not have an extra named `(?P<extra>[^`]+)`", _drop_extra),
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def diagnose(
    log: str,
    *,
    tried: Collection[Repair] = (),
    extras: Sequence[str] = (),
    version: str | None = None,
    local: Mapping[str, str] | None = None,
) -> list[Repair]:
    """The repairs to try next for the failure ``log`` shows, most specific first.

    ``extras`` are the project's extras being installed (dropped, last first, when a dependency fails
    to build); ``version`` is the project's declared version, pretended when git metadata is missing;
    ``local`` maps modules that projects inside the checkout provide to their folders
    (:func:`images.local_projects.local_modules`): a missing one installs its folder (``./examples/x``);
    a missing private submodule of the project's own (folder ``.``) builds its extensions in place.
    A repair is left out when one of the same kind and value is in ``tried``; for the install-mode
    switches (``no_build_isolation``, ``no_editable``) the kind alone counts. An empty list means
    nothing certain can be done: an ``ImportError`` for a name a module lacks, an externally managed
    interpreter, an unknown fixture or marker, a missing module of the project itself or the standard
    library.
    """
    text = _ANSI.sub("", log)
    ctx = _Context(text, extras, version, local or {})
    seen = {_key(repair.kind, repair.value) for repair in tried}
    repairs: list[Repair] = []
    for rule in RULES:
        for match in rule.pattern.finditer(text):
            for kind, value in rule.handler(match, ctx):
                if _key(kind, value) not in seen:
                    seen.add(_key(kind, value))
                    repairs.append(Repair(kind, value, _why(text, match.start())))
    return repairs


def _key(kind: RepairKind, value: str) -> tuple[str, str]:
    return (kind, "" if kind in FLAG_KINDS else value)


def _why(text: str, position: int) -> str:
    """The log line around ``position``, stripped and shortened to :data:`WHY_LENGTH` characters."""
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    line = text[start : end if end != -1 else len(text)].strip()
    return line if len(line) <= WHY_LENGTH else line[: WHY_LENGTH - 1] + "…"
