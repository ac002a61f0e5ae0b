"""CI set-up replay: the commands a workflow's test job runs before its tests that the build needs.

A serialization library generates its C from Cython in ``make cython``, which its workflow runs before
``pip install``; a project may build its extension in place (``python setup.py build_ext --inplace``),
build JavaScript assets with npm, or ``apt-get install`` the headers it compiles against. This reader
takes the first GitHub Actions job that runs the tests on Linux, walks its ``run:`` steps up to the
test command, and keeps the commands that build something, filtered to what is safe offline: nothing
that uploads, reads secrets, runs Docker, talks to git servers or downloads from outside a package
registry (``curl … | sh``), and no command the filter cannot read as written (pipes, background jobs,
command substitution, redirections, variable assignments with more than a plain value, other
Makefiles). ``make`` targets are checked through the Makefile's own recipe lines, read as written.

The filter keeps a workflow's own text from smuggling commands in; it is no sandbox. A replayed
``make`` target or ``setup.py build_ext`` runs the repository's code, as installing the project does
anyway: what contains it is the build container.

The commands before the job's install of the project run before the project's install step; those
after run after the install steps. ``pip install`` commands before a kept command are replayed with it
(``pip install cython && cython x.pyx``), since the build command needs what they installed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

from images.header_packages import TOOLS, debian_name, is_package_name
from images.readers.ci import CI_EXCLUDED_WORDS, RUNS_TESTS_RE, ci_files
from images.readers.collector import Collector, Found
from images.readers.common import EXCLUDED_WORDS, name_words, relative_path
from images.readers.installers import pip_arguments, shell_words
from images.readers.makefile import recipe_lines
from images.recipe import RecipeStep

Phase = Literal["before", "after"]

#: Commands that run the tests: the set-up ends where they start.
_TEST_COMMANDS = frozenset(
    {"pytest", "py.test", "tox", "nox", "unittest", "coverage", "trial", "green", "ward", "runtests.py"}
)
#: Words of a ``make`` target (or npm script) that runs the tests.
_TEST_WORDS = frozenset({"test", "tests", "testing", "check", "coverage", "cov", "pytest", "ci", "tox"})
#: Commands never replayed, and why: they publish, reach servers other than package registries, or need
#: the CI machine's privileges.
_UNSAFE = {
    "curl": "downloads from the internet",
    "wget": "downloads from the internet",
    "git": "talks to a git server or changes the checkout",
    "docker": "runs Docker",
    "docker-compose": "runs Docker",
    "podman": "runs containers",
    "ssh": "reaches another machine",
    "scp": "reaches another machine",
    "rsync": "reaches another machine",
    "twine": "uploads a release",
    "gh": "talks to GitHub",
    "aws": "talks to a cloud",
    "gcloud": "talks to a cloud",
    "gsutil": "talks to a cloud",
    "az": "talks to a cloud",
    "codecov": "uploads coverage",
    "coveralls": "uploads coverage",
    "kubectl": "talks to a cluster",
    "helm": "talks to a cluster",
    "rm": "deletes files",
    "choco": "is another operating system's installer",
    "brew": "is another operating system's installer",
}
#: Installers of the project itself (the set-up's phase boundary); the plan installs the project.
_PROJECT_INSTALLERS = {("uv", "sync"), ("poetry", "install"), ("pdm", "install"), ("pipenv", "install"),
                       ("hatch", "env"), ("maturin", "develop"), ("setup.py", "develop"),
                       ("setup.py", "install"), ("flit", "install")}  # fmt: skip
#: Environment managers whose ``run`` runs a command in the project's environment.
_RUNNERS = frozenset({"hatch", "pdm", "poetry", "uv", "pipenv", "rye"})
_BUILDS = frozenset({"build_ext", "build", "build_clib", "build_py"})
_NODE_COMMANDS = frozenset({"npm", "yarn", "pnpm", "jlpm", "npx"})
_NODE_SETUP = frozenset({"ci", "install", "build"})
#: Make targets that install rather than build (the plan installs the project) or that clean up.
_MAKE_SKIPPED = frozenset(
    {"install", "dev", "develop", "clean", "dist", "sdist", "wheel", "upload", "release"}
)
#: Debian packages the base image has already.
_IN_BASE = frozenset({"build-essential", "gcc", "g++", "make", "python3-dev", "pkg-config", "git", "python3"})
_PYTHON = re.compile(r"python(?:\d(?:\.\d+)?)?$")
_EXPRESSION = re.compile(r"\$\{\{\s*(?P<body>.*?)\s*\}\}")
#: A Makefile recipe line that compiles or generates something a build needs.
_BUILDS_SOMETHING = re.compile(
    r"\b(?:cython|cythonize|build_ext|build_clib|setup\.py\s+build|npm|yarn|pnpm|gcc|cc|g\+\+|cmake"
    r"|protoc|swig|f2py|make)\b|\$\(MAKE\)|\$\(CC\)",
    re.IGNORECASE,
)
#: Shell operators that make a command more than the one simple command the filter read: a pipe or a
#: background job (a lone ``|`` or ``&``: ``&&`` and ``||`` split commands), command substitution and
#: redirection.
_SHELL_TRICKS = re.compile(r"(?<![|&])[|&](?![|&])|`|\$\(|[<>]")
#: The same in a Makefile's recipe line, where ``$(VAR)`` is make's and ``$$(`` the shell's, ``$<`` an
#: automatic variable, and ``$(shell …)`` or a recursive make runs what the filter never reads.
_MAKE_TRICKS = re.compile(
    r"(?<![|&])[|&](?![|&])|`|\$\$\(|\$\(shell\b|\$[({]MAKE[)}]|(?<!\$)[<>]"
)
#: A variable assignment the filter can read: a plain value, no spaces, quotes or expansions.
_PLAIN_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=[\w.,:/@%+=-]*")
#: make options that read other Makefiles or evaluate text.
_MAKE_FILE_OPTIONS = re.compile(r"-[fIE]|--(?:file|makefile|include-dir|eval)\b")
_OTHER_OS = re.compile(r"windows|macos|darwin|win32", re.IGNORECASE)


@dataclass
class CiSetup:
    """The set-up commands worth replaying, as recipe steps, and the Debian packages they install."""

    apt_packages: list[str] = field(default_factory=list)
    before: list[RecipeStep] = field(default_factory=list)
    """Steps to run before the project's install step."""
    after: list[RecipeStep] = field(default_factory=list)
    """Steps to run after the install steps, before the tests."""
    needs_node: bool = False
    """A replayed command runs npm, yarn or pnpm."""
    notes: list[str] = field(default_factory=list)


def read_setup(root: Path) -> CiSetup:
    """The set-up of the first Linux test job among the project's GitHub workflows (empty without one)."""
    setup = CiSetup()
    for rel, job_name, job in _test_jobs(root, setup):
        _replay(root, f"{rel} job {job_name}", job, setup)
        break
    return setup


def _test_jobs(root: Path, setup: CiSetup) -> Iterator[tuple[str, str, dict[str, Any]]]:
    collector = Collector(root)
    for rel in ci_files(collector):
        if not rel.startswith(".github/") or name_words(PurePosixPath(rel).stem) & CI_EXCLUDED_WORDS:
            continue
        try:
            doc = yaml.load(collector.text(rel) or "", Loader=yaml.BaseLoader)
        except yaml.YAMLError:
            setup.notes.append(f"CI set-up: {rel} is not valid YAML")
            continue
        jobs = doc.get("jobs") if isinstance(doc, dict) else None
        for name, job in (jobs or {}).items() if isinstance(jobs, dict) else ():
            if not isinstance(job, dict) or name_words(str(name)) & CI_EXCLUDED_WORDS:
                continue
            runs_on = str(job.get("runs-on", ""))
            if _OTHER_OS.search(runs_on) and "ubuntu" not in runs_on.lower():
                continue
            runs = "\n".join(str(step.get("run", "")) for step in _steps(job))
            if RUNS_TESTS_RE.search(runs) or RUNS_TESTS_RE.search(str(name)):
                yield rel, str(name), job


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job.get("steps")
    return [step for step in steps if isinstance(step, dict)] if isinstance(steps, list) else []


@dataclass
class _Block:
    """The kept commands of one ``run:`` step, in order, and what they need installed first."""

    commands: list[str] = field(default_factory=list)
    builds: bool = False
    support: Found = field(default_factory=Found)


def _replay(root: Path, where: str, job: dict[str, Any], setup: CiSetup) -> None:
    phase: Phase = "before"
    pending = Found()  # what the job's pip installs asked for since the last replayed block
    job_env = _plain_env(job.get("env"), where, setup)
    defaults = job.get("defaults")
    run_defaults = defaults.get("run") if isinstance(defaults, dict) else None
    job_dir = run_defaults.get("working-directory") if isinstance(run_defaults, dict) else None
    for number, step in enumerate(_steps(job), start=1):
        run = step.get("run")
        if not isinstance(run, str):
            continue
        label = f"{where}, step {step.get('name') or number}"
        condition = str(step.get("if", ""))
        if _OTHER_OS.search(condition) and "!=" not in condition:
            continue
        if (str(step.get("shell") or "bash").split() or ["bash"])[0] not in ("bash", "sh"):
            continue
        if "secrets." in run:
            setup.notes.append(f"CI set-up: not replayed, reads the workflow's secrets: {label}")
            continue
        block = _Block()
        ended = False
        env = {**job_env, **_plain_env(step.get("env"), label, setup)}
        workdir = step.get("working-directory") or job_dir
        cd = f"cd {shlex.quote(workdir)}" if isinstance(workdir, str) and "${{" not in workdir else None
        for command in _commands(run):
            kind = _classify(root, command, phase, block, pending, setup, label)
            if kind == "test":
                ended = True
                break
            if kind == "project":
                if block.builds:
                    _emit(block, phase, label, env, cd, setup)
                block = _Block()
                phase = "after"
        if block.builds:
            _emit(block, phase, label, env, cd, setup)
        if ended:
            return


def _emit(
    block: _Block, phase: Phase, label: str, env: dict[str, str], cd: str | None, setup: CiSetup
) -> None:
    why = f"CI set-up: {label}"
    support = block.support
    steps = setup.before if phase == "before" else setup.after
    if support.packages or support.requirement_files:
        words = [*map(shlex.quote, support.packages)]
        words += [f"-r {shlex.quote(rel)}" for rel in support.requirement_files]
        needs = RecipeStep(f"uv pip install {' '.join(words)}", f"{why} (what it needs)", required=False)
        steps.append(needs)
    commands = [command for command in [cd, *block.commands] if command]
    steps.append(RecipeStep(" && ".join(commands), why, env, required=False))
    setup.notes.append(f"CI set-up replayed {phase} the project's install: {steps[-1].run}: {label}")


def _classify(
    root: Path, command: str, phase: Phase, block: _Block, pending: Found, setup: CiSetup, label: str
) -> str:
    """Sort one shell command into the block: "test" (the set-up ends), "project" (the job installs the
    project), "kept", "support" (a pip install a kept command may need) or "dropped"."""
    words = shell_words(command)
    # sudo and plain variable assignments change nothing about what runs; the command is replayed as
    # written, so an assignment must be one the filter can read (a value that names a program would
    # run it wherever a Makefile or script expands the variable).
    while words and (words[0] in ("sudo", "-E", "time") or re.fullmatch(r"[A-Za-z_]\w*=.*", words[0])):
        if "=" in words[0] and not _PLAIN_ASSIGNMENT.fullmatch(words[0]):
            setup.notes.append(
                f"CI set-up: not replayed, assigns more than a plain value: {command}: {label}"
            )
            return "dropped"
        words = words[1:]
    if not words:
        return "dropped"
    if _has_tricks(command):
        program = _program(words)[0]
        if program in _TEST_COMMANDS:
            return "test"
        what = "a pipe, background job, substitution or redirection"
        setup.notes.append(f"CI set-up: not replayed, {what}: {command}: {label}")
        return "dropped"
    program, args = _program(words)
    if "${{" in command.replace("${{ github.workspace }}", ""):
        if program in _TEST_COMMANDS:
            return "test"
        setup.notes.append(f"CI set-up: not replayed, uses a workflow expression: {command}: {label}")
        return "dropped"
    if program in _TEST_COMMANDS or (program == "setup.py" and args[:1] == ["test"]):
        return "test"
    if program in _RUNNERS and args[:1] in (["run"], ["test"]):
        # ``hatch run test``, ``poetry run pytest``: the test command, when it names one.
        rest = _program(args[1:])[0] if len(args) > 1 else ""
        if args[0] == "test" or rest in _TEST_COMMANDS or name_words(rest) & _TEST_WORDS:
            return "test"
    if program in ("make", "gmake", "just"):
        return _make(root, command, args, block, pending, setup, label)
    if program in _UNSAFE:
        if program != "rm":
            setup.notes.append(f"CI set-up: not replayed, {_UNSAFE[program]}: {command}: {label}")
        return "dropped"
    if (program, (args or [""])[0]) in _PROJECT_INSTALLERS:
        return "project"
    if program == "pip" and args[:1] == ["install"]:
        found = Found()
        pip_arguments(args[1:], found)
        if found.extras or any(re.fullmatch(r"-e|--editable|\.|\./?(\[.*\])?", a) for a in args[1:]):
            return "project"
        pending.packages.extend(found.packages)
        pending.requirement_files.extend(found.requirement_files)
        return "support"
    if program in ("apt-get", "apt") and "install" in args:
        packages = [a for a in args[args.index("install") + 1 :] if not a.startswith("-")]
        _apt(packages, setup, label)
        return "dropped"
    if program in ("cython", "cythonize") or (program == "setup.py" and args[:1] and args[0] in _BUILDS):
        _keep(command, block, pending, need="Cython" if program.startswith("cython") else None)
        if program == "setup.py":
            block.support.packages.append("setuptools")
        return "kept"
    if program in _NODE_COMMANDS:
        target = args[1] if args[:1] == ["run"] and len(args) > 1 else (args or ["install"])[0]
        if (target in _NODE_SETUP or target.startswith("build")) and phase == "before":
            setup.needs_node = True
            _keep(command, block, pending)
            return "kept"
        if name_words(target) & _TEST_WORDS:
            return "test"
        setup.notes.append(f"CI set-up: not replayed, npm the Python build does not need: {command}: {label}")
        return "dropped"
    if program == "cd" and len(args) == 1:
        block.commands.append(command.strip())
        return "kept"
    return "dropped"


def _has_tricks(command: str) -> bool:
    """Whether ``command`` holds a shell operator the filter does not read (``_SHELL_TRICKS``): outside
    quotes any of them; inside double quotes substitutions only; inside single quotes none."""
    outside, quote, index = [], "", 0
    while index < len(command):
        char = command[index]
        if quote == "'":
            quote = "" if char == "'" else quote
        elif quote == '"':
            if char == "\\":
                index += 1
            elif char == '"':
                quote = ""
            elif char == "`" or command.startswith("$(", index):
                return True
        elif char == "\\":
            index += 1
            outside.append(" ")
        elif char in "'\"":
            quote = char
            outside.append(" ")
        else:
            outside.append(char)
        index += 1
    return bool(_SHELL_TRICKS.search("".join(outside)))


def _program(words: list[str]) -> tuple[str, list[str]]:
    """The program a command runs, seen through ``python -m X`` and ``python setup.py``; its arguments."""
    name = words[0].rsplit("/", 1)[-1]
    if _PYTHON.match(name) and len(words) > 1:
        if words[1] == "-m" and len(words) > 2:
            module = {"Cython": "cython", "Cython.Build.Cythonize": "cythonize"}.get(words[2], words[2])
            return module.lower(), words[3:]
        if words[1].rsplit("/", 1)[-1] in ("setup.py", "runtests.py"):
            return words[1].rsplit("/", 1)[-1], words[2:]
    if name in ("uv", "pip3") and words[1:2] == ["pip"]:
        return "pip", words[2:]
    if re.fullmatch(r"pip\d*(\.\d+)?", name):
        return "pip", words[1:]
    return name, words[1:]


def _keep(command: str, block: _Block, pending: Found, need: str | None = None) -> None:
    block.commands.append(command.strip())
    block.builds = True
    block.support.packages.extend(p for p in pending.packages if p not in block.support.packages)
    block.support.requirement_files.extend(pending.requirement_files)
    pending.packages.clear()
    pending.requirement_files.clear()
    if need and not any(name_words(p) & {need.lower()} for p in block.support.packages):
        block.support.packages.append(need)


def _make(
    root: Path, command: str, args: list[str], block: _Block, pending: Found, setup: CiSetup, label: str
) -> str:
    """A make target is kept when it builds something and every recipe line it runs is safe."""
    directory, targets = ".", []
    words = iter(args)
    for word in words:
        if _MAKE_FILE_OPTIONS.match(word) or ("=" in word and not _PLAIN_ASSIGNMENT.fullmatch(word)):
            reason = f"`{word}` is more than the filter reads"
            setup.notes.append(f"CI set-up: not replayed, {reason}: {command}: {label}")
            return "dropped"
        if word in ("-C", "--directory"):
            directory = next(words, ".")
        elif not word.startswith("-") and "=" not in word:
            targets.append(word)
    if any(name_words(t) & _TEST_WORDS for t in targets):
        return "test"
    if any(t in _MAKE_SKIPPED or name_words(t) & EXCLUDED_WORDS for t in targets):
        return "project" if set(targets) & {"install", "dev", "develop"} else "dropped"
    folder = "." if directory == "." else relative_path(directory)
    lines = recipe_lines(root / folder, targets) if folder is not None else None
    if lines is None:
        setup.notes.append(f"CI set-up: not replayed, no Makefile in {directory}: {command}: {label}")
        return "dropped"
    for line in lines:
        for part in _commands(line):
            words = shell_words(part)
            program = _program(words)[0] if words else ""
            recursive = program in ("make", "gmake")
            if (program in _UNSAFE and program != "rm") or recursive or _MAKE_TRICKS.search(part):
                setup.notes.append(
                    f"CI set-up: not replayed, its recipe line `{line}` is unsafe offline: {command}: {label}"
                )
                return "dropped"
    if not any(_BUILDS_SOMETHING.search(line) for line in lines):
        setup.notes.append(f"CI set-up: not replayed, builds nothing the install needs: {command}: {label}")
        return "dropped"
    runs_cython = any(re.search(r"\bcython(?:ize)?\b", line, re.IGNORECASE) for line in lines)
    _keep(command, block, pending, need="Cython" if runs_cython else None)
    return "kept"


def _apt(packages: list[str], setup: CiSetup, label: str) -> None:
    """Keep the build headers and tools among the CI's apt packages; note the rest."""
    tools = {name for value in TOOLS.values() for name in value.split()}
    kept, left = [], []
    for package in map(debian_name, packages):
        if not is_package_name(package) or package in _IN_BASE or re.match(r"python\d\.\d+", package):
            continue
        (kept if package.endswith("-dev") or package in tools else left).append(package)
    for package in kept:
        if package not in setup.apt_packages:
            setup.apt_packages.append(package)
    if kept:
        setup.notes.append(f"CI set-up: Debian packages {', '.join(kept)}: {label}")
    if left:
        setup.notes.append(f"CI set-up: Debian packages {', '.join(left)} not installed (not build headers "
                           f"or tools): {label}")  # fmt: skip


def _plain_env(env: object, where: str, setup: CiSetup) -> dict[str, str]:
    """A step's or job's ``env:`` without the values that need the workflow (secrets, expressions)."""
    if not isinstance(env, dict):
        return {}
    plain = {
        str(k): str(v)
        for k, v in env.items()
        if re.fullmatch(r"[A-Za-z_]\w*", str(k)) and not re.search(r"\$\{\{|\$\(|`|\n", str(v))
    }
    if len(plain) < len(env):
        setup.notes.append(
            "CI set-up: environment variables left out (workflow expressions, substitutions, odd names): "
            + where
        )
    return plain


def _commands(script: str) -> list[str]:
    """A ``run:`` script's simple commands as written, split at newlines, ``&&``, ``||`` and ``;``
    outside quotes; continuation lines joined and comments dropped."""
    script = re.sub(r"\\[ \t]*\r?\n\s*", " ", script)
    commands: list[str] = []
    for line in script.splitlines():
        current, quote, index = [], "", 0
        while index < len(line):
            char = line[index]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#" and (index == 0 or line[index - 1].isspace()):
                break
            elif line.startswith(("&&", "||"), index) or char == ";":
                commands.append("".join(current).strip())
                current = []
                index += 1 if char == ";" else 2
                continue
            current.append(char)
            index += 1
        commands.append("".join(current).strip())
    return [command for command in commands if command]

