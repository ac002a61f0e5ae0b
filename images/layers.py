"""Thin images: one commit's image made from a ready image of another commit of the same source.

A full build plans, installs, repairs and runs a baseline (~30 s to minutes per commit). Commits whose
installs are planned the same way (:func:`plan_environment`: the same CPython, the same steps before
any repair, the same test command) need not start over, so mining reuses one environment across them,
as SWE-bench keeps one environment per version: a **layer** is a ready image of one commit with the
other commit checked out in its repository, the base's install steps (with their repairs) run again
over the existing environment, and the history sanitized again (only that commit and its ancestors).

Running the steps again is what keeps a layer faithful at little cost: packages already installed are
kept (uv only audits them), a dependency the commit added or a pin it moved is installed, the project
itself is reinstalled so a changed C or Cython source is compiled, and the commit's own lock pins
replace the base's. A required step that fails makes no layer: the commit gets a full build instead.
Requirements resolve as of the later of the two commits' dates, and packages the base installed that
satisfy the commit's declarations stay, even when newer than the commit: validation and grading run in
the layer itself, so tasks agree with it.

Before the steps, the checkout is cleaned of the base's untracked files (build folders, extensions
compiled in place: the base is usually the later commit, and they could hold the fix); the project is
installed with the version its tags give, as a full build's clone would (the image's history has no
tags). :class:`images.reuse.Environments` chooses, for mining, between a commit's own image, a layer
and a full build.

A layer keeps its base's test command; its recipe is the base's with the commit's own pins and date;
its baseline is the base's (it is not run again):
tests of the other commit may differ, which mining tolerates — validation and grading run the tests
themselves — but other consumers of baselines should build the commit instead. Its log tail says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import git
from docker.errors import DockerException
from packaging.version import InvalidVersion, Version

from core.errors import ForagerError
from images.build_container import BuildRunner
from images.build_log import BuildLog
from images.build_result import BuildFailed, BuildOptions
from images.builder import GIT_SANITIZE, BuildResult, ImageBuilder, planned_recipe
from images.detect import detect
from images.engine import CLEAR_OWNER, build_container_name
from images.install_loop import from_checkout, installs_the_checkout, keep_project_installed
from images.python_choice import UnsupportedPython, choose_for
from images.recipe import REPO_DIR, VENV_DIR, InstallRecipe, RecipeStep
from images.sources import Checkout, SourceSpec
from images.steps import LOCK_DIR
from storage import Image, ImageStatus

#: How a layer's image record begins its log tail: what tells a layer from a full build in the store.
LAYER_NOTE = "a layer over "
_BUNDLE = "/tmp/forager-layer.bundle"
_REF = "refs/forager/layer"
#: How the step writing a lock file's pins begins (:func:`images.steps.plan_recipe`): each commit has
#: its own pins.
_PINS = f"mkdir -p {LOCK_DIR} && printf "
#: Removes whatever distribution is installed from the checkout, so that the steps install the layer's
#: commit afresh rather than keep the base commit's.
_UNINSTALL_PROJECT = f"""names=$({from_checkout()})
if [ -n "$names" ]; then uv pip uninstall $names; fi"""


class LayerError(ForagerError):
    """A layer could not be made: the engine or git failed, the commit could not be checked out, or a
    required install step of the base failed for it."""


@dataclass(frozen=True)
class Environment:
    """How a commit's install is planned, as far as sharing it goes."""

    key: str
    """A digest of the recipe a build of the commit would start from, without what differs per commit
    and a layer runs again anyway: the date requirements resolve as of, a pretended version, the lock
    file's pins, the steps' reasons. Commits with the same key share one install."""
    pins: RecipeStep | None
    """The commit's own step writing its lock file's pins, if its plan has one."""
    project: str | None
    """The project's distribution name, as declared."""


def plan_environment(
    tree: Path, spec: SourceSpec, commit: str, committed_at: datetime | None, options: BuildOptions
) -> Environment | None:
    """The environment of ``commit``, whose files are at ``tree``, as a build with ``options`` would plan
    it; None when no build of it could succeed (not Python, no CPython it supports)."""
    plan = detect(tree)
    if not plan.is_python:
        return None
    if options.base_image:
        base, python = options.base_image, None
    else:
        try:
            choice = choose_for(tree, plan.requires_python, python=options.python, committed_at=committed_at)
        except UnsupportedPython:
            return None
        base, python = choice.base.tag, choice.base.python
    recipe, _, _ = planned_recipe(plan, Checkout(spec, tree, commit, committed_at=committed_at), base, None)
    pins = next((step for step in recipe.steps if step.run.startswith(_PINS)), None)
    steps = [
        {
            "run": "(pins)" if step is pins else step.run,
            "required": step.required,
            "env": {k: v for k, v in step.env.items() if k != "SETUPTOOLS_SCM_PRETEND_VERSION"},
        }
        for step in recipe.steps
    ]
    env = {k: v for k, v in recipe.install_env.items() if k != "UV_EXCLUDE_NEWER"}
    canonical = {"base": base, "python": python, "steps": steps, "test": recipe.test_command, "env": env}
    key = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return Environment(key, pins, plan.name)


def commit_tree(repo: git.Repo, commit: str, dest: Path) -> Path:
    """``commit``'s files written to the new folder ``dest`` (no ``.git``), as a checkout has them
    (``git archive`` would leave out what ``.gitattributes`` marks ``export-ignore``).

    Raises:
        subprocess.CalledProcessError: git could not read the commit (the clone lacks it).
        OSError: the files could not be written.
    """
    dest.mkdir(parents=True)
    index = dest.parent / f".{dest.name}.index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    git_dir = ["git", f"--git-dir={repo.git_dir}"]
    try:
        for command in (["read-tree", commit], [f"--work-tree={dest}", "checkout-index", "--all"]):
            subprocess.run([*git_dir, *command], env=env, check=True, capture_output=True)
    finally:
        index.unlink(missing_ok=True)
    return dest


def release_version(repo: git.Repo, commit: str) -> str | None:
    """The version setuptools_scm would give ``commit`` from the tags of ``repo``: the last release tag,
    or the next release's ``.devN`` N commits after it; None without a release tag."""
    try:
        described = repo.git.describe("--tags", "--long", commit)
    except git.GitCommandError:
        return None
    match = re.fullmatch(r"(?P<tag>.+)-(?P<distance>\d+)-g[0-9a-f]+", described)
    found = re.search(r"\d+(?:\.\d+)*(?:(?:a|b|rc)\d+)?$", match["tag"]) if match else None
    if match is None or found is None:
        return None
    try:
        version = Version(found[0])
    except InvalidVersion:
        return None
    if match["distance"] == "0":
        return str(version)
    if version.pre:  # 2.0rc1, then 2.0rc2.devN
        return f"{version.base_version}{version.pre[0]}{version.pre[1] + 1}.dev{match['distance']}"
    release = [*version.release[:-1], version.release[-1] + 1]
    return ".".join(map(str, release)) + f".dev{match['distance']}"


def layer(
    builder: ImageBuilder, base: Image, repo: git.Repo, spec: SourceSpec, commit: str,
    environment: Environment,
) -> BuildResult:  # fmt: skip
    """The image of ``commit`` made from ``base``, a ready image of another commit of ``spec`` (``repo``
    holds both commits) whose install is planned alike (``environment``), as the module doc says;
    recorded in the builder's store like a build.

    Raises:
        LayerError: the engine or git failed, the commit could not be checked out, a required install
            step failed, or the build's time ran out.
        BuildCancelled: the builder was cancelled.
    """
    started = time.monotonic()
    source = f"{spec.location}@{commit}"  # as a build of the commit would record it
    base_commit = base.repository.commit
    tag = f"{base.tag.split(':')[0]}:{commit[:12]}-layer-{base.tag.split(':')[1][:21]}"
    if (cached := builder.cached(tag)) is not None:
        return replace(cached, cached=True)
    log_dir = builder.home / "logs" / "images" / spec.name
    log_dir.mkdir(parents=True, exist_ok=True)
    log = BuildLog(log_dir / f"layer-{time.strftime('%Y%m%d-%H%M%S')}-{commit[:12]}.log")
    log.section(f"source {source}: a layer over {base.tag} ({base_commit})")
    recipe = _recipe(builder, base, repo, spec, commit, environment, log)
    env = {**builder.options.network.environment(), "UV_LINK_MODE": "copy", **recipe.install_env}
    if version := release_version(repo, commit):
        env["SETUPTOOLS_SCM_PRETEND_VERSION"] = version  # steps that set their own keep theirs
    try:
        container = builder.install_container(base.tag, build_container_name(f"{spec.name}-layer"))
    except DockerException as exc:
        raise LayerError(f"could not start a container of {base.tag}: {exc}") from exc
    try:
        if base_commit and not repo.is_ancestor(commit, base_commit):
            container.put_archive("/tmp", _bundle(repo, base_commit, commit))
        run = BuildRunner(container, log, env, started + builder.options.timeout, builder.cancel)
        _run_or_fail(run, f"check out {commit[:12]}", _checkout_script(commit))
        _run_or_fail(run, "uninstall the base commit's project", _UNINSTALL_PROJECT)
        for step in _steps_to_run(recipe, environment.project):
            if run(step.why, step.run, step.env) != 0 and step.required:
                raise LayerError(f"{step.why}: failed for {commit[:12]} over {base.tag} (see {log.path})")
        recipe = replace(recipe, steps=tuple(keep_project_installed(run, list(recipe.steps))))
        _run_or_fail(run, "sanitize git history", GIT_SANITIZE)
        labels = {"forager.source": source, "forager.commit": commit, "forager.layer-of": base.tag}
        repository, version = tag.split(":")
        image = container.commit(
            repository=repository,
            tag=version,
            conf={"Labels": labels, "WorkingDir": REPO_DIR},
            changes=['CMD ["bash"]', CLEAR_OWNER],
        )
    except (BuildFailed, DockerException, git.GitCommandError) as exc:
        # Out of time, the container died, the engine failed, git could not bundle the commits.
        raise LayerError(f"could not make a layer of {base.tag} for {commit[:12]}: {exc}") from exc
    finally:
        with contextlib.suppress(DockerException):  # a gc of build containers removes what is left
            builder.containers.remove(container)
    seconds = time.monotonic() - started
    note = (
        f"{LAYER_NOTE}{base.tag}: {commit} checked out in it, its install steps run again; "
        "the baseline is the base's, not run again"
    )
    log.section(note)
    stored = builder.store.save_image(
        Image(
            repository_id=builder.store.get_or_create_repository(source, spec.name, commit).id,
            tag=tag,
            docker_id=image.id,
            status=ImageStatus.READY,
            base_image=base.base_image,
            recipe=recipe.to_json(),
            recipe_hash=recipe.digest(),
            test_command=base.test_command,
            baseline=dict(base.baseline),
            flaky=list(base.flaky),
            tests_passed=base.tests_passed,
            tests_total=base.tests_total,
            durations=base.durations,
            partial=base.partial,
            size_bytes=image.attrs.get("Size"),
            build_seconds=seconds,
            log_path=str(log.path),
            log_tail=note,
        )
    )
    return BuildResult(
        source, spec.name, ImageStatus.READY, None, note, stored.tag, commit, stored.tests_passed,
        stored.tests_total, seconds, stored.size_bytes, log_path=log.path,
    )  # fmt: skip


def _recipe(
    builder: ImageBuilder, base: Image, repo: git.Repo, spec: SourceSpec, commit: str,
    environment: Environment, log: BuildLog,
) -> InstallRecipe:  # fmt: skip
    """The base's recipe as the commit's: its own lock pins, and requirements resolved as of the later of
    the two commits' dates (an older commit keeps its base's: the environment's packages are of that
    date, and an older one can need build tools older than its Python runs, setuptools 44 on 3.9)."""
    recipe = InstallRecipe.from_json(base.recipe)
    steps = [
        step if not step.run.startswith(_PINS) else environment.pins
        for step in recipe.steps
        if environment.pins is not None or not step.run.startswith(_PINS)
    ]
    install_env = dict(recipe.install_env)
    committed_at = repo.commit(commit).committed_datetime
    as_of = builder.resolve_as_of(Checkout(spec, Path(REPO_DIR), commit, committed_at=committed_at), log)
    if as_of is None:
        install_env.pop("UV_EXCLUDE_NEWER", None)
    else:
        ours = as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if (theirs := install_env.get("UV_EXCLUDE_NEWER", ours)) > ours:
            log.section(f"resolving as of {theirs} instead, the base's date: the environment is of that date")
        install_env["UV_EXCLUDE_NEWER"] = max(ours, theirs)
    return replace(recipe, steps=tuple(s for s in steps if s is not None), install_env=install_env)


def _run_or_fail(run: BuildRunner, title: str, script: str) -> None:
    if run(title, script, {}) != 0:
        raise LayerError(f"{title}: failed (see {run.log.path})")


def _steps_to_run(recipe: InstallRecipe, project: str | None) -> list[RecipeStep]:
    """The recipe's steps a layer runs: not those whose work no checkout changes (the venv, Debian
    packages); every install refreshes uv's cached build of the project, which uv would otherwise reuse
    while the project's metadata files are unchanged (a commit that changes only a C source)."""
    refresh = f"--refresh-package {shlex.quote(project)}" if project else "--no-cache"
    again = []
    for step in recipe.steps:
        if step.run.startswith(f"python3 -m venv {VENV_DIR}") or "apt-get " in step.run:
            continue
        if project or installs_the_checkout(step.run):
            step = replace(step, run=step.run.replace("uv pip install ", f"uv pip install {refresh} ", 1))
        again.append(step)
    return again


def _checkout_script(commit: str) -> str:
    """Check ``commit`` out (from the bundle when there is one) with none of the base's untracked files
    left (sanitizing afterwards keeps only the commit and its ancestors, and hides the new ones)."""
    sha = shlex.quote(commit)
    return f"""set -e
if [ -f {_BUNDLE} ]; then git fetch -q {_BUNDLE} "+{_REF}:{_REF}"; fi
git checkout -q --force --detach {sha}
git clean -q -ffdx
: > .git/info/exclude
rm -f {_BUNDLE}"""


def _bundle(repo: git.Repo, base_commit: str, commit: str) -> bytes:
    """A tar holding a git bundle of the commits from ``base_commit`` (which the image has) to ``commit``."""
    repo.git.update_ref(_REF, commit)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.bundle"
            repo.git.bundle("create", str(path), _REF, f"^{base_commit}")
            data = path.read_bytes()
    finally:
        repo.git.update_ref("-d", _REF)
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        info = tarfile.TarInfo(posixpath.basename(_BUNDLE))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return stream.getvalue()
