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

A layer keeps its base's recipe and test command; its baseline is the base's (it is not run again):
tests of the other commit may differ, which mining tolerates — validation and grading run the tests
themselves — but other consumers of baselines should build the commit instead. Its log tail says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import posixpath
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

from core.errors import ForagerError
from images.build_container import BuildRunner
from images.build_log import BuildLog
from images.build_result import BuildFailed, BuildOptions
from images.builder import GIT_SANITIZE, BuildResult, ImageBuilder, planned_recipe
from images.detect import detect
from images.engine import CLEAR_OWNER, build_container_name
from images.install_loop import FROM_CHECKOUT
from images.python_choice import UnsupportedPython, choose_for
from images.recipe import REPO_DIR, VENV_DIR, RecipeStep
from images.sources import Checkout, SourceSpec, parse_source
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
#: commit afresh: uv keeps an editable install whose metadata files did not change, and with it the
#: base commit's compiled extensions.
_UNINSTALL_PROJECT = f"""names=$({FROM_CHECKOUT}
)
if [ -n "$names" ]; then uv pip uninstall $names; fi"""


class LayerError(ForagerError):
    """A layer could not be made: the engine failed, the commit could not be checked out, or a required
    install step of the base failed for it."""


@dataclass(frozen=True)
class Environment:
    """How a commit's install is planned, as far as sharing it goes."""

    key: str
    """A digest of the recipe a build of the commit would start from, without what differs per commit
    and a layer runs again anyway: the date requirements resolve as of, a pretended version, the lock
    file's pins, the steps' reasons. Commits with the same key share one install."""
    pins: RecipeStep | None
    """The commit's own step writing its lock file's pins, if its plan has one."""


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
    return Environment(hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest(), pins)


def commit_tree(repo: git.Repo, commit: str, dest: Path) -> Path:
    """``commit``'s files written to the new folder ``dest`` (no ``.git``).

    Raises:
        subprocess.CalledProcessError: git could not archive the commit (the clone lacks it).
    """
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", repo.git_dir, "archive", "--format=tar", commit], check=True, capture_output=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="tar")
    return dest


def layer(
    builder: ImageBuilder, base: Image, repo: git.Repo, spec: SourceSpec, commit: str, pins: RecipeStep | None
) -> BuildResult:
    """The image of ``commit`` made from ``base``, a ready image of another commit of ``spec`` (``repo``
    holds both commits), as the module doc says; recorded in the builder's store like a build.
    ``pins`` is the commit's own lock-pins step (:attr:`Environment.pins`).

    Raises:
        LayerError: the engine failed, git could not check the commit out in the image, a required
            install step failed, or the build's time ran out.
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
    committed_at = repo.commit(commit).committed_datetime
    as_of = builder.resolve_as_of(Checkout(spec, Path(REPO_DIR), commit, committed_at=committed_at), log)
    install_env = dict((base.recipe or {}).get("install_env") or {})
    if as_of is None:
        install_env.pop("UV_EXCLUDE_NEWER", None)
    else:
        # An older commit keeps its base's date: the environment's packages are of that date, and an
        # older date can need older build tools than its Python runs (setuptools 44 on 3.9).
        ours = as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if (theirs := install_env.get("UV_EXCLUDE_NEWER", ours)) > ours:
            log.section(f"resolving as of {theirs} instead, the base's date: the environment is of that date")
        install_env["UV_EXCLUDE_NEWER"] = max(ours, theirs)
    try:
        container = builder.install_container(base.tag, build_container_name(f"{spec.name}-layer"))
    except DockerException as exc:
        raise LayerError(f"could not start a container of {base.tag}: {exc}") from exc
    try:
        if base_commit and not repo.is_ancestor(commit, base_commit):
            container.put_archive("/tmp", _bundle(repo, base_commit, commit))
        env = {**builder.options.network.environment(), "UV_LINK_MODE": "copy", **install_env}
        run = BuildRunner(container, log, env, started + builder.options.timeout, builder.cancel)
        _run_or_fail(run, f"check out {commit[:12]}", _checkout_script(commit))
        _run_or_fail(run, "uninstall the base commit's project", _UNINSTALL_PROJECT)
        for step in _steps_again(base, pins):
            if run(step.why, step.run, step.env) != 0 and step.required:
                raise LayerError(f"{step.why}: failed for {commit[:12]} over {base.tag} (see {log.path})")
        _run_or_fail(run, "sanitize git history", GIT_SANITIZE)
        labels = {"forager.source": source, "forager.commit": commit, "forager.layer-of": base.tag}
        repository, version = tag.split(":")
        image = container.commit(
            repository=repository,
            tag=version,
            conf={"Labels": labels, "WorkingDir": REPO_DIR},
            changes=['CMD ["bash"]', CLEAR_OWNER],
        )
    except (BuildFailed, DockerException) as exc:  # out of time, the container died, the engine failed
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
            recipe=base.recipe,
            recipe_hash=base.recipe_hash,
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


def _run_or_fail(run: BuildRunner, title: str, script: str) -> None:
    if run(title, script, {}) != 0:
        raise LayerError(f"{title}: failed (see {run.log.path})")


def _steps_again(base: Image, pins: RecipeStep | None) -> list[RecipeStep]:
    """The base's install steps a layer runs again: not those whose work no checkout changes (the venv,
    Debian packages), and the commit's own lock pins instead of the base's."""
    again = []
    for data in (base.recipe or {}).get("steps", []):
        step = RecipeStep(**data)
        if step.run.startswith(f"python3 -m venv {VENV_DIR}") or "apt-get " in step.run:
            continue
        if step.run.startswith(_PINS):
            if pins is None:
                continue
            step = pins
        again.append(step)
    return again


def _checkout_script(commit: str) -> str:
    """Check ``commit`` out, from the bundle when there is one (sanitizing afterwards keeps only it and
    its ancestors)."""
    sha = shlex.quote(commit)
    return f"""set -e
if [ -f {_BUNDLE} ]; then git fetch -q {_BUNDLE} "+{_REF}:{_REF}"; fi
git checkout -q --force --detach {sha}
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


class Environments:
    """Where mining gets each commit's image for one source: an image of that commit already ready,
    else a layer over a ready image with the same :attr:`Environment.key`, else a full build.

    Ready images come from the store (earlier runs) and from the builds made here; the newest full
    build of a key is the base of its layers (mining walks history newest first, so it is the nearest).
    """

    def __init__(
        self, builder: ImageBuilder, spec: SourceSpec, repo: git.Repo, *, reuse: bool = True
    ) -> None:
        self.builder, self.spec, self.repo, self.reuse = builder, spec, repo, reuse
        self._environments: dict[str, Environment | None] = {}
        self._bases: dict[str, Image] | None = None
        self._failed: dict[str, BuildResult] = {}

    def image_for(self, commit: str) -> tuple[BuildResult, bool]:
        """The image of ``commit`` and whether it is a layer; the result's status says whether it is
        ready. A layer that cannot be made falls back to a full build."""
        if not self.reuse:
            return self.builder.build(parse_source(f"{self.spec.location}@{commit}")), False
        bases = self._known_bases()
        environment = self.environment(commit)
        base = bases.get(environment.key) if environment else None
        if environment and base is not None and base.repository.commit != commit:
            try:
                return layer(self.builder, base, self.repo, self.spec, commit, environment.pins), True
            except LayerError:
                pass  # the full build below says what is wrong, if anything
        built = self.builder.build(parse_source(f"{self.spec.location}@{commit}"))
        record = self.builder.store.get_image(built.tag) if built.tag else None
        if environment and record is not None and record.status == ImageStatus.READY:
            bases[environment.key] = record
        elif environment and base is None:
            self._failed[environment.key] = built
        return built, False

    def failed_alike(self, commit: str) -> BuildResult | None:
        """The failed full build, made here, of another commit whose install is planned as ``commit``'s
        is, when no image of that plan is ready: building ``commit`` would most likely fail the same way."""
        environment = self.environment(commit) if self.reuse else None
        if environment is None or environment.key in self._known_bases():
            return None
        return self._failed.get(environment.key)

    def environment(self, commit: str) -> Environment | None:
        """:func:`plan_environment` of ``commit``; None when this clone lacks it or it cannot be built."""
        if commit not in self._environments:
            scratch = self.builder.home / "tmp"
            scratch.mkdir(parents=True, exist_ok=True)
            try:
                with tempfile.TemporaryDirectory(dir=scratch, prefix="tree-") as tmp:
                    tree = commit_tree(self.repo, commit, Path(tmp) / "tree")
                    when = self.repo.commit(commit).committed_datetime
                    found = plan_environment(tree, self.spec, commit, when, self.builder.options)
            except (subprocess.CalledProcessError, ValueError, git.GitCommandError):
                found = None
            self._environments[commit] = found
        return self._environments[commit]

    def _known_bases(self) -> dict[str, Image]:
        if self._bases is None:
            self._bases = {}
            for image in self.builder.store.list_images(ImageStatus.READY, name=self.spec.name):
                commit = image.repository.commit
                if not commit or "-layer-" in image.tag or not self._ours(image.repository.source):
                    continue
                if (environment := self.environment(commit)) is not None:
                    self._bases.setdefault(environment.key, image)
        return self._bases

    def _ours(self, source: str) -> bool:
        """Whether an image's source is this one (mining builds ``LOCATION@COMMIT``)."""
        return source in (self.spec.text, self.spec.location) or source.startswith(f"{self.spec.location}@")
