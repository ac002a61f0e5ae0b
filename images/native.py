"""Native code in a Python project: what it is written in, what its build needs, and how it failed.

:func:`detect_native` reads the checkout (the build backend, ``setup.py``, source files, ``Cargo.toml``)
without running anything. :func:`apt_step` is the recipe step installing Debian packages (build
headers, the Rust toolchain). :func:`install_failure` turns the log of an install step that could not
be repaired into a precise failure class: ``native_build_failed`` with the compiler's own line quoted,
rather than a generic ``install_failed``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from images.baseline import FailureClass
from images.cargo import downloaded_crates, fetch_failure
from images.readers.common import read_text, read_toml
from images.recipe import RecipeStep

#: Folders never searched for sources: vendored environments, build output, version control.
_SKIPPED_DIRS = frozenset(
    {".git", ".hg", ".tox", ".nox", ".venv", "venv", "node_modules", "build", "dist", "site-packages"}
)
#: How many files are looked at before giving up (a monorepo must not stall detection).
_MAX_FILES = 20000
_SUFFIXES = {".pyx": "Cython", ".pxd": "Cython", ".c": "C", ".cpp": "C++", ".cc": "C++", ".cxx": "C++"}
#: What in ``setup.py`` declares compiled extensions.
_SETUP_EXTENSION = re.compile(
    r"\b(?:ext_modules|Extension\s*\(|cythonize\s*\(|Pybind11Extension|RustExtension|CFFI_MODULES"
    r"|cffi_modules)"
)
#: A C or C++ source named in ``setup.py`` (``"src/pkg/_speed.c"``).
_NAMED_SOURCE = re.compile(r"[\"']([\w./-]+)\.(c|cpp)[\"']")
#: Build backends and build requirements that compile native code.
_RUST_REQUIREMENTS = re.compile(r"^(?:maturin|setuptools[-_]rust)\b", re.IGNORECASE)
_NATIVE_BACKENDS = {
    "maturin": "Rust (maturin)",
    "scikit_build_core.build": "C/C++ (scikit-build-core, CMake)",
    "mesonpy": "C/C++ (meson-python)",
}
#: Debian's Rust toolchain, the one an image can have without a download from outside a package
#: registry.
RUST_PACKAGES = ("rustc", "cargo")
#: Newer builds of a package the same suite ships under another name, tried first. Bookworm's rustc
#: (1.63) is older than current PyO3 needs and its cargo cannot read the crates registry's sparse index;
#: bookworm's rustc-web and cargo-web (1.85) install the same /usr/bin/rustc and /usr/bin/cargo.
#: Later suites have no -web packages and a new enough rustc, so the plain names are the fallback.
_NEWER = {"rustc": "rustc-web", "cargo": "cargo-web"}


@dataclass(frozen=True)
class NativeCode:
    """The native side of a project, as its files declare it."""

    languages: tuple[str, ...]
    """``C``, ``C++``, ``Cython``, ``Rust``, in that order; empty for a pure-Python project."""
    rust: bool
    """A Rust extension (maturin, setuptools-rust or a ``Cargo.toml``): needs rustc and cargo."""
    ungenerated: tuple[str, ...]
    """``.pyx`` files whose ``.c``/``.cpp``, named in ``setup.py``, is not in the checkout: something
    (a Makefile target, a CI step) must run Cython before the project can be built."""
    evidence: tuple[str, ...]
    crate_downloads: tuple[str, ...] | None = None
    """Crates cargo downloads to build the Rust extension (:func:`images.cargo.downloaded_crates`):
    empty when it needs none, None when there is no crate or it cannot be known."""

    @property
    def install_env(self) -> dict[str, str]:
        """Variables the install steps need: ``CARGO_NET_OFFLINE`` for a crate that downloads nothing.

        Offline, cargo never looks for a registry index; should the lock file be wrong after all, it
        fails at once naming the crate instead of retrying a registry the build may not reach. A crate
        that does download keeps the network: where its registry is reachable, it builds.
        """
        return {"CARGO_NET_OFFLINE": "true"} if self.rust and self.crate_downloads == () else {}


def detect_native(root: Path) -> NativeCode:
    """What native code the project at ``root`` builds. Reads files only; never raises for content."""
    evidence: list[str] = []
    languages: set[str] = set()
    rust = False
    pyproject = read_toml(root / "pyproject.toml")
    build_system = pyproject.get("build-system") if isinstance(pyproject.get("build-system"), dict) else {}
    backend = build_system.get("build-backend")
    if isinstance(backend, str) and backend in _NATIVE_BACKENDS:
        evidence.append(f"native build backend {backend}: {_NATIVE_BACKENDS[backend]} (pyproject.toml)")
        languages.add("Rust" if backend == "maturin" else "C")
        rust = backend == "maturin"
    listed = build_system.get("requires")
    requires = [r for r in listed if isinstance(r, str)] if isinstance(listed, list) else []
    if any(_RUST_REQUIREMENTS.match(r) for r in requires) and not rust:
        rust = True
        languages.add("Rust")
        evidence.append("Rust extension: pyproject.toml's build requirements name maturin or setuptools-rust")
    cargo = _cargo_manifest(root, pyproject)
    if cargo is not None and not rust:
        rust = True
        languages.add("Rust")
        evidence.append(f"Rust extension: {cargo.relative_to(root).as_posix()}")
    if rust and any(r.lower().startswith("maturin") for r in requires):
        evidence.append("maturin from the package index: a build requirement in pyproject.toml")
    downloads = downloaded_crates(cargo, root) if cargo is not None else None
    if downloads:
        shown = ", ".join(downloads[:5]) + (", ..." if len(downloads) > 5 else "")
        evidence.append(f"the Rust crate needs {len(downloads)} crate(s) from a registry or git: {shown}")
    elif downloads == ():
        evidence.append("the Rust crate needs no crate from a registry or git: cargo builds offline")
    setup = read_text(root / "setup.py")
    declares = bool(_SETUP_EXTENSION.search(setup))
    if declares:
        evidence.append("setup.py declares compiled extensions")
    sources = _sources(root)
    found = {_SUFFIXES[path.suffix] for path in sources}
    if "Cython" in found:
        languages.add("Cython")
    if declares or backend in _NATIVE_BACKENDS:
        languages |= found
    ungenerated = _ungenerated(root, setup, sources)
    if ungenerated:
        evidence.append(
            f"setup.py builds {', '.join(ungenerated)} from Cython sources whose C is not in the checkout"
        )
    order = ("C", "C++", "Cython", "Rust")
    if languages:
        evidence.append(f"native code: {', '.join(lang for lang in order if lang in languages)}")
    return NativeCode(
        tuple(lang for lang in order if lang in languages), rust, ungenerated, tuple(evidence), downloads
    )


def apt_step(
    packages: list[str] | tuple[str, ...], why: str, *, required: bool = True, available_only: bool = False
) -> RecipeStep:
    """The step installing Debian ``packages`` (lists fetched and removed again in the same step).

    Packages with a newer build under another name (:data:`_NEWER`) are installed by that name when
    the suite has it, by their own otherwise. With ``available_only`` (names read from a CI workflow,
    perhaps Ubuntu's), the packages the suite does not have are left out instead of failing the step.
    """
    wanted = list(dict.fromkeys(packages))
    install = "apt-get install -y -q --no-install-recommends "
    names = " ".join(shlex.quote(name) for name in wanted)
    if available_only:
        names = f'$(for p in {names}; do apt-cache show "$p" >/dev/null 2>&1 && echo "$p"; done)'
    command = install + names
    if any(name in _NEWER for name in wanted):
        newer = install + " ".join(shlex.quote(_NEWER.get(name, name)) for name in wanted)
        command = f"{{ {newer} || {command}; }}"
    command = f"apt-get update -q && {command} && rm -rf /var/lib/apt/lists/*"
    return RecipeStep(command, why, required=required)


#: A compiler's own error lines (gcc, clang, the linker, rustc, Cython, distutils), most telling first.
_COMPILER_ERRORS = (
    re.compile(r"^.*?\S+:\d+:(?:\d+:)? fatal error: .+$", re.MULTILINE),
    re.compile(r"^.*?\S+:\d+:(?:\d+:)? error: .+$", re.MULTILINE),
    re.compile(r"^.*?\bld: cannot find .+$", re.MULTILINE),
    re.compile(r"^.*?(?:undefined reference to|collect2: error:) .+$", re.MULTILINE),
    re.compile(r"^.*?error\[E\d+\]: .+$", re.MULTILINE),
    re.compile(r"^.*?error: (?:linker `\w+` not found|can't find Rust compiler|could not compile `.+`).*$",
               re.MULTILINE),
    re.compile(r"^.*?Error compiling Cython file.*$", re.MULTILINE),
    re.compile(r"^.*?error: command '[^']+' failed.*$", re.MULTILINE),
)
_LINE_LENGTH = 300


def compiler_error(log: str) -> str | None:
    """The first line in ``log`` where a compiler, linker or Cython said what went wrong, or None."""
    for pattern in _COMPILER_ERRORS:
        match = pattern.search(log)
        if match:
            # uv indents the build's output and may prefix it; the compiler's words are what matter.
            line = re.sub(r"^\s*(?:\[stderr\]\s*)?", "", match[0]).strip()
            return line[:_LINE_LENGTH]
    return None


def install_failure(why: str, log: str, last_error: str) -> tuple[FailureClass, str]:
    """(failure class, reason) for an install step that could not be made to work.

    ``native_build_failed`` names the crate cargo could not download, or quotes the compiler's line
    when the log has one; otherwise ``install_failed`` with ``last_error``, the log's last line that
    looks like an error.
    """
    crate = fetch_failure(log)
    if crate is not None:
        return "native_build_failed", (
            f"{why}: cargo could not download the Rust crate `{crate}`: its registry (cargo's crates-io, or"
            " the one the crate names) is not reachable from the build; vendor the crates into the checkout"
            " (`cargo vendor`) or build where that registry is reachable"
        )
    line = compiler_error(log)
    if line is not None:
        return "native_build_failed", f"{why}: compiling native code failed: {line}"
    return "install_failed", f"{why}: {last_error}"


def _sources(root: Path) -> list[Path]:
    """Native source files of the project (tests, docs and vendored environments excluded)."""
    found: list[Path] = []
    seen = 0
    stack = [root]
    while stack and seen < _MAX_FILES:
        folder = stack.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if entry.is_dir() and not entry.is_symlink():
                if entry.name not in _SKIPPED_DIRS and not entry.name.startswith("."):
                    stack.append(entry)
            elif entry.suffix in _SUFFIXES:
                found.append(entry)
    return found


def _ungenerated(root: Path, setup: str, sources: list[Path]) -> tuple[str, ...]:
    """C/C++ files named in ``setup.py`` that are missing while a ``.pyx`` of the same name exists."""
    pyx = {path.relative_to(root).with_suffix("").as_posix() for path in sources if path.suffix == ".pyx"}
    missing = []
    for match in _NAMED_SOURCE.finditer(setup):
        stem, suffix = match[1].removeprefix("./"), match[2]
        if stem in pyx and not (root / f"{stem}.{suffix}").is_file():
            missing.append(f"{stem}.{suffix}")
    return tuple(dict.fromkeys(missing))


def _cargo_manifest(root: Path, pyproject: dict) -> Path | None:
    """The Rust crate's ``Cargo.toml``: maturin's ``manifest-path``, else at the root or one folder down."""
    maturin = pyproject.get("tool", {}).get("maturin") if isinstance(pyproject.get("tool"), dict) else None
    named = maturin.get("manifest-path") if isinstance(maturin, dict) else None
    candidates = [root / named] if isinstance(named, str) else []
    candidates += [root / "Cargo.toml", *sorted(root.glob("*/Cargo.toml"))]
    inside = root.resolve()
    return next((p for p in candidates if p.is_file() and p.resolve().is_relative_to(inside)), None)
