"""The build's set-up steps: what native code and the project's CI need before and after its install.

:func:`add_setup_steps` adds to a planned recipe the Debian packages the build needs (the CI's build
headers, Debian's Rust toolchain for a Rust extension, Node.js for npm steps), the CI's replayed set-up
commands (:mod:`images.readers.ci_steps`), and, when nothing else generates them, the C files of
Cython sources that ``setup.py`` compiles. Every step says in its ``why`` what called for it, so the
Dockerfile says so too.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

from images.native import RUST_PACKAGES, apt_step, detect_native
from images.readers.ci_steps import read_setup
from images.recipe import InstallRecipe, RecipeStep

#: Debian's Node.js and npm, for the npm steps a project's CI runs to build assets its package ships.
NODE_PACKAGES = ("nodejs", "npm")


def add_setup_steps(recipe: InstallRecipe, root: Path) -> tuple[InstallRecipe, list[str]]:
    """``recipe`` with the set-up steps the checkout at ``root`` calls for, and one note per decision.

    Steps needed before the project is built go just before the first install step (after the venv
    and the lock file's constraints); the CI's commands that follow its install go after all of them.
    """
    native = detect_native(root)
    ci = read_setup(root)
    notes = [*native.evidence, *ci.notes]
    before = []
    if ci.apt_packages:
        # Optional, and without the names this suite lacks: a workflow may name Ubuntu's packages.
        why = "build headers and tools the CI installs"
        before.append(apt_step(ci.apt_packages, why, required=False, available_only=True))
    toolchains, whys = [], []
    if native.rust:
        toolchains += RUST_PACKAGES
        whys.append("Debian's Rust toolchain for the Rust extension")
    if ci.needs_node:
        toolchains += NODE_PACKAGES
        whys.append("Node.js for the CI's npm steps")
    if toolchains:
        before.append(apt_step(toolchains, "; ".join(whys), required=native.rust))
    before += ci.before
    if native.ungenerated and not ci.before:
        before.append(_cythonize(native.ungenerated))
        notes.append(f"Cython run on {', '.join(native.ungenerated)}: nothing in the CI generates them")
    if not before and not ci.after:
        return recipe, notes or ["no native code and no CI set-up steps to replay"]
    steps = list(recipe.steps)
    first_install = next((i for i, s in enumerate(steps) if s.run.startswith("uv pip install")), len(steps))
    steps[first_install:first_install] = before
    # Only the project's own installs: a dependency built from an sdist may need the network cargo uses.
    steps = [
        replace(step, env={**step.env, **native.install_env})
        if step.required and step.run.startswith("uv pip install")
        else step
        for step in steps
    ]
    return replace(recipe, steps=(*steps, *ci.after)), notes


def _cythonize(generated: tuple[str, ...]) -> RecipeStep:
    """Cython in the venv, then the C (or C++) that ``setup.py`` compiles from each ``.pyx``."""
    commands = ["uv pip install Cython"]
    for path in generated:
        stem, _, suffix = path.rpartition(".")
        flag = " --cplus" if suffix == "cpp" else ""
        commands.append(f"cython{flag} {shlex.quote(stem + '.pyx')} -o {shlex.quote(path)}")
    return RecipeStep(" && ".join(commands), "setup.py compiles C that Cython generates from .pyx sources")
