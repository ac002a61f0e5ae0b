"""From an install plan and the repairs an error log suggests to recipe steps: pure functions over data.

:func:`plan_recipe` turns a detected :class:`~images.detect.InstallPlan` into the steps a build runs
first; :func:`apply_repair` and :func:`first_change` turn a :class:`~images.repair.Repair` into the
steps to run instead of a failed one; :func:`one_package_each` and :func:`without_install_limits` are
the builder's last resorts for a step nothing else fixes. Nothing here runs a command.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import replace
from datetime import UTC, datetime

from images.detect import InstallPlan
from images.native import apt_step
from images.recipe import VENV_DIR, InstallRecipe, RecipeStep
from images.repair import Repair
from images.sources import Checkout

#: Where a lock file's pins are kept during the install (outside the checkout, and not in /tmp, which
#: sanitizing empties).
LOCK_DIR = "/opt/forager"
CONSTRAINTS = f"{LOCK_DIR}/constraints.txt"
PYTEST = "python -m pytest -p no:cacheprovider"


def plan_recipe(
    plan: InstallPlan, checkout: Checkout, base_image: str, resolve_as_of: datetime | None = None
) -> InstallRecipe:
    """The install steps a detected plan calls for, before any repair.

    With ``resolve_as_of``, every install step resolves as of that moment (uv's ``--exclude-newer``);
    with a lock file in the plan, its pins constrain every install step.
    """
    steps = [RecipeStep(f"python3 -m venv {VENV_DIR}", "a virtual environment of its own for the project")]
    install_env = {}
    if resolve_as_of is not None:
        install_env["UV_EXCLUDE_NEWER"] = resolve_as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if plan.pins:
        pins = " ".join(shlex.quote(pin) for pin in plan.pins)
        why = f"the versions {plan.lock_file} pins, as constraints for every install step"
        steps.append(RecipeStep(f"mkdir -p {LOCK_DIR} && printf '%s\\n' {pins} > {CONSTRAINTS}", why))
        install_env["UV_CONSTRAINT"] = CONSTRAINTS
    uv = "uv pip install"
    if plan.installable:
        target = "." + (f"[{','.join(plan.extras)}]" if plan.extras else "")
        why = "the project, editable" + (f", with extras {', '.join(plan.extras)}" if plan.extras else "")
        env = {"SETUPTOOLS_SCM_PRETEND_VERSION": checkout.version} if checkout.version else {}
        steps.append(RecipeStep(f"{uv} -e {shlex.quote(target)}", why, env))
    for group in plan.dependency_groups:
        steps.append(RecipeStep(f"{uv} --group {shlex.quote(group)}", f"dependency group {group}"))
    for path in plan.requirement_files:
        steps.append(RecipeStep(f"{uv} -r {shlex.quote(path)}", f"requirements file {path}", required=False))
    if plan.packages:
        packages = " ".join(shlex.quote(p) for p in plan.packages)
        why = "test tools and dependencies declared outside the metadata"
        steps.append(RecipeStep(f"{uv} {packages}", why, required=False))
    paths = " ".join(shlex.quote(p) for p in plan.test_paths)
    args = " ".join(shlex.quote(a) for a in plan.pytest_args)
    test_command = " ".join(part for part in (PYTEST, args, paths) if part)
    return InstallRecipe(
        base_image=base_image,
        steps=tuple(steps),
        test_command=test_command,
        install_env=install_env,
        lock_file=plan.lock_file,
    )


def one_package_each(step: RecipeStep) -> list[RecipeStep]:
    """``uv pip install a b c`` as one step per package; [] for anything else."""
    words = shlex.split(step.run)
    packages = words[3:]
    if words[:3] != ["uv", "pip", "install"] or len(packages) < 2 or any(p.startswith("-") for p in packages):
        return []
    return [replace(step, run=f"uv pip install {shlex.quote(p)}", why=f"{step.why}: {p}") for p in packages]


#: What a step may be freed of when it cannot be installed otherwise, most particular first: the lock
#: file's pins (a lock older than the requirements it must satisfy), then the commit's date (a project
#: whose pinned requirements were released after it, or a release deleted since).
_INSTALL_LIMITS = (
    ("UV_CONSTRAINT", "the lock file's pins cannot be installed with the rest: installing without them"),
    ("UV_EXCLUDE_NEWER", "nothing released before the commit's date satisfies it: resolving newest releases"),
)


def without_install_limits(step: RecipeStep, env: dict[str, str]) -> list[RecipeStep] | None:
    """``step`` freed of the next install limit in effect (``env -u VAR``), or None when none is left."""
    if "uv pip install" not in step.run:
        return None
    for variable, why in _INSTALL_LIMITS:
        if variable in env and f"env -u {variable} " not in step.run:
            # Before the install itself: a step may prepare files first (copies without -e lines).
            run = step.run.replace("uv pip install", f"env -u {variable} uv pip install", 1)
            return [replace(step, run=run, why=f"{step.why} (repair: {why})")]
    return None


def first_change(repairs: list[Repair], step: RecipeStep, tried: list[Repair]) -> list[RecipeStep] | None:
    """The steps to run instead of ``step`` for the first repair that changes anything (all are
    marked tried), or None: a repair that changes nothing would only fail again."""
    for repair in repairs:
        tried.append(repair)
        replacement = apply_repair(repair, step)
        if [(s.run, s.env) for s in replacement] != [(step.run, step.env)]:
            return replacement
    return None


def apply_repair(repair: Repair, step: RecipeStep) -> list[RecipeStep]:
    """The steps to run instead of ``step`` after ``repair``."""
    why = f"repair: {repair.why}"
    if repair.kind == "install":
        return [RecipeStep(f"uv pip install {shlex.quote(repair.value)}", why, required=False), step]
    if repair.kind == "apt":
        return [apt_step(repair.value.split(), why), step]
    if repair.kind == "env":
        key, _, value = repair.value.partition("=")
        return [replace(step, env={**step.env, key: value}, why=f"{step.why} ({why})")]
    if repair.kind == "drop_extra":
        command = re.sub(
            r"\[([^\]]*)\]",
            lambda m: _without(m[1], repair.value),
            step.run,
            count=1,
        )
        return [replace(step, run=command, why=f"{step.why} ({why})")]
    if repair.kind == "relax_pins":
        if set(step.run) & set(";&|<>"):
            return [step]  # a pipeline of its own (a copy of a requirements file): not rewritten blind
        match = re.search(r"-r (\S+)", step.run)
        if match:
            relaxed = f"/tmp/forager-relaxed-{abs(hash(match[1])) % 10**8}.txt"
            command = f"sed -E 's/(==|~=|<=|<)[^;#]*//' {match[1]} > {relaxed} && uv pip install -r {relaxed}"
            return [replace(step, run=command, why=f"{step.why} ({why})")]
        return [replace(step, run=re.sub(r"==[^\s'\"]+", "", step.run), why=f"{step.why} ({why})")]
    if repair.kind == "no_build_isolation":
        return [
            RecipeStep(f"uv pip install {shlex.quote(repair.value)} setuptools wheel", why, required=False)
            if repair.value
            else RecipeStep("uv pip install setuptools wheel", why, required=False),
            replace(step, run=step.run.replace("uv pip install", "uv pip install --no-build-isolation", 1)),
        ]
    if repair.kind == "no_editable":
        if " -e " not in step.run and (plain := _not_editable(step.run)) is not None:
            return [replace(step, run=plain, why=f"{step.why} ({why})")]
        return [replace(step, run=step.run.replace(" -e ", " ", 1), why=f"{step.why} ({why})")]
    return [step]


def _not_editable(command: str) -> str | None:
    """``command``, an install of one requirements file (``... uv pip install ... -r FILE``), with the
    ``-e`` lines made plain in copies that are removed afterwards, so that the checkout stays as it was:
    of the file's whole folder when it has one (files it includes with ``-r``, yarl's ``test.txt``, have
    ``-e .`` too, and their relative paths still hold), else of the file alone, beside it. None for any
    other command (a pipeline of its own, no ``-r``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if any(set(word) & set(";&|<>") for word in words) or words.count("-r") != 1:
        return None
    at = words.index("-r") + 1
    if at >= len(words):
        return None
    path = words[at]
    folder, name = posixpath.split(path)
    plain = "sed -E{} 's/^[[:space:]]*(-e|--editable)([[:space:]]+|=)//'"
    if folder in ("", "."):
        scratch = copy = posixpath.join(folder, ".forager-not-editable.txt")
        prepare = f"{plain.format('')} {shlex.quote(path)} > {shlex.quote(copy)}"
    else:
        scratch = f"{folder}.forager-not-editable"
        copy = posixpath.join(scratch, name)
        prepare = (
            f"rm -rf {shlex.quote(scratch)} && cp -r {shlex.quote(folder)} {shlex.quote(scratch)}"
            f" && find {shlex.quote(scratch)} -type f -exec {plain.format(' -i')} {{}} +"
        )
    install = shlex.join([*words[:at], copy, *words[at + 1 :]])
    return f"{prepare} && {install}; status=$?; rm -rf {shlex.quote(scratch)}; exit $status"


def _without(extras: str, dropped: str) -> str:
    kept = [e for e in extras.split(",") if e.strip() and e.strip() != dropped]
    return f"[{','.join(kept)}]" if kept else ""
