"""Building one repository image: fetch, detect, install and repair, commit, record a test baseline.

The build runs in a long-lived container (host network, shared package cache volume) that is
committed when installation works, as CWM's and Repo2Run's builders do: the install-and-repair loop
never starts over from scratch, and the cache is never baked into an image. The recipe of commands
that worked is kept as data and as a Dockerfile. The baseline runs in fresh containers made from the
committed image with no network, exactly as episodes will run.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.types import Mount
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from images.base import BASE_IMAGE, BaseImageError, ensure_base_image
from images.baseline import Baseline, Verdict
from images.build_container import (
    BuildContainers,
    BuildRunner,
    missing_tools,
    remove_image,
    tar_directory,
    untar_single,
)
from images.build_log import BuildLog
from images.build_records import record_build, record_failure, write_artifacts
from images.build_result import BuildCancelled, BuildFailed, BuildOptions, BuildResult
from images.build_setup import add_setup_steps
from images.detect import InstallPlan, detect
from images.engine import CLEAR_OWNER, build_container_name
from images.install_loop import collect, keep_project_installed, run_steps
from images.pypi import PackageIndexError, default_index_url, has_upload_times
from images.python_choice import UnsupportedPython, choose_for
from images.recipe import IMAGE_ENV, REPO_DIR, InstallRecipe
from images.runners import choose_test_command
from images.sources import Checkout, SourceError, SourceSpec, fetch
from images.steps import plan_recipe
from images.suite_runs import Execution, RunSettings, run_baseline
from storage import ImageStatus, Store

__all__ = ["CACHE_VOLUME", "BuildOptions", "BuildResult", "ImageBuilder", "image_tag"]

#: Bump when the same plan would turn into different steps: it changes every image tag.
BUILDER_VERSION = "1"
#: Named volume shared by all build containers: pip's and uv's download and wheel caches.
CACHE_VOLUME = "forager-cache"

#: Leaves only the checked-out commit and its ancestors (no later commit, so no fix) and hides the
#: install's untracked files (build folders, compiled extensions) from ``git status``.
GIT_SANITIZE = """set -e
git checkout -q --detach HEAD
git remote | while read -r remote; do git remote remove "$remote"; done
git for-each-ref --format='%(refname)' | while read -r ref; do git update-ref -d "$ref"; done
git checkout -q -B main
git reflog expire --expire=now --all
git gc -q --prune=now
git config --global user.name forager && git config --global user.email forager@localhost
git status --porcelain --untracked-files=all | sed -n 's/^?? //p' >> .git/info/exclude
rm -rf /tmp/* /tmp/.[!.]* 2>/dev/null || true"""


def image_tag(name: str, commit: str, recipe_digest: str) -> str:
    """``forager/OWNER__REPO:COMMIT12-SPEC8``, lower-cased to what Docker accepts."""
    repository = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._") or "repo"
    repository = re.sub(r"([_.-])[_.-]+", lambda m: "__" if m[0] == "__" else m[1], repository)
    return f"forager/{repository}:{commit[:12]}-{recipe_digest[:8]}"


#: The earliest moment requirements are resolved as of: setuptools 40.8.0's release, the version uv
#: (as PEP 517 says) builds a project without a pyproject.toml with. Before it, no setup.py builds.
OLDEST_RESOLUTION = datetime(2019, 2, 6, tzinfo=UTC)


class ImageBuilder:
    """Builds repository images with one Docker engine and records them in one store.

    Safe to use from several threads at once (``forager images build --jobs N``); ``cancel`` stops
    every build at its next step, and :meth:`kill_all` removes their containers at once.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        store: Store,
        home: Path,
        options: BuildOptions | None = None,
        progress: Progress = no_progress,
    ) -> None:
        self.client = client
        self.store = store
        self.home = home
        self.options = options or BuildOptions()
        self.progress = progress
        self.cancel = threading.Event()
        self.containers = BuildContainers(client, self.cancel)
        self._lock = threading.Lock()
        self._index_url: str | None = None
        self._upload_times: tuple[bool, str] | None = None

    def build(self, spec: SourceSpec) -> BuildResult:
        """Build (or find already built) the image of ``spec``. Failures are results, not exceptions,
        except :class:`BuildCancelled`."""
        started = time.monotonic()
        log_dir = self.home / "logs" / "images" / spec.name
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"build-{time.strftime('%Y%m%d-%H%M%S')}-{threading.get_ident() % 10000}.log"
        log = BuildLog(log_path)
        scratch = self.home / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        checkout: Checkout | None = None
        base_image = self.options.base_image or BASE_IMAGE  # what a failure is recorded as built on
        with tempfile.TemporaryDirectory(dir=scratch, prefix="src-") as tmp:
            try:
                self._stage(spec, "fetch", spec.text)
                checkout = self._fetch(spec, Path(tmp) / "src")
                log.section(f"source {spec.text} at {checkout.commit}")
                if checkout.history_cut:
                    log.section(f"history cut to the commit's tree: {checkout.history_cut}")
                result = self._build_checkout(checkout, log, started)
            except BuildFailed as failed:
                log.section(f"FAILED ({failed.failure_class}): {failed.reason}")
                base_image = failed.base_image or base_image
                result = record_failure(self.store, spec, checkout, failed, log, started, base_image)
            except BuildCancelled:
                log.section("cancelled")
                raise
            except (DockerException, RequestsConnectionError) as exc:
                failed = self._engine_failure(spec, exc)
                log.section(f"FAILED (docker_error): {exc}")
                result = record_failure(self.store, spec, checkout, failed, log, started, base_image)
        self._stage(spec, result.status.value, result.reason)
        return result

    def build_many(self, specs: list[SourceSpec], jobs: int = 1) -> list[BuildResult]:
        """Build ``specs`` with up to ``jobs`` at once; results in the order given.

        On Ctrl-C every build is cancelled and its containers removed before the interrupt propagates;
        nothing of an unfinished build is recorded.
        """
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="forager-build") as pool:
            futures = [pool.submit(self.build, spec) for spec in specs]
            try:
                wait(futures)
            except KeyboardInterrupt:
                self.kill_all()
                for future in futures:
                    future.cancel()
                wait(futures)
                raise
        return [future.result() for future in futures]

    def kill_all(self) -> None:
        """Cancel every build and remove its containers now (Ctrl-C)."""
        self.cancel.set()
        self.containers.remove_all()

    # -- stages ---------------------------------------------------------------------------------------

    def _fetch(self, spec: SourceSpec, dest: Path) -> Checkout:
        if self._index_url is None and spec.kind == "pypi":
            self._index_url = self.options.network.index_url or default_index_url()
        try:
            return fetch(
                spec,
                dest,
                sdist_cache=self.home / "cache" / "sdists",
                index_url=self._index_url or "",
                ca_bundle=self.options.network.ca_bundle,
            )
        except SourceError as exc:
            raise BuildFailed("clone_failed", str(exc)) from exc

    def _build_checkout(self, checkout: Checkout, log: BuildLog, started: float) -> BuildResult:
        plan = detect(checkout.path)
        log.section("detected", *plan.evidence)
        if not plan.is_python:
            raise BuildFailed("not_python", "no Python project files and no Python code found")
        base_image, base, python = self._base(checkout, plan, log)
        try:
            return self._build_on(checkout, plan, (base_image, base, python), log, started)
        except BuildFailed as failed:
            failed.base_image = base_image  # recorded as built on the base it failed on
            raise
        except (DockerException, RequestsConnectionError) as exc:
            failed = self._engine_failure(checkout.spec, exc)
            failed.base_image = base_image
            raise failed from exc

    def _build_on(
        self, checkout: Checkout, plan: InstallPlan, chosen: tuple[str, str, str | None], log: BuildLog,
        started: float,
    ) -> BuildResult:  # fmt: skip
        """The build once its base is chosen (``chosen``: the base image, its id and its CPython)."""
        spec = checkout.spec
        base_image, base, python = chosen
        as_of = self.resolve_as_of(checkout, log)
        recipe, setup_notes, why = planned_recipe(plan, checkout, base_image, as_of)
        log.section("build set-up (native code, CI set-up steps)", *setup_notes)
        log.section(why)
        recipe = replace(recipe, python=python)
        tag = image_tag(spec.name, checkout.commit, _digest(recipe, base))
        if not self.options.rebuild and (cached := self.cached(tag)) is not None:
            return replace(cached, seconds=time.monotonic() - started, cached=True)
        deadline = started + self.options.timeout
        recipe, image = self._install(checkout, plan, recipe, tag, log, deadline)
        try:
            baseline, verdict = self._baseline(spec, tag, recipe.test_command, log)
        except BaseException:
            remove_image(self.client, tag)
            raise
        seconds = time.monotonic() - started
        unique = image.attrs["Size"] - self.client.images.get(recipe.base_image).attrs["Size"]
        write_artifacts(self.home, checkout, recipe, baseline, tag)
        outcome = (baseline, verdict)
        return record_build(self.store, checkout, recipe, tag, image, unique, outcome, seconds, log)

    def resolve_as_of(self, checkout: Checkout, log: BuildLog) -> datetime | None:
        """The moment unpinned requirements are resolved as of: the commit's date plus the margin, or
        None (newest releases) when asked, when the source has no date of its own, or when the package
        index gives no upload times."""
        if self.options.resolve_newest:
            log.section("resolving the newest releases (--resolve-newest)")
            return None
        if checkout.committed_at is None:
            log.section("resolving the newest releases: the source has no commit date of its own")
            return None
        if not self._index_has_upload_times(log):
            return None
        moment = checkout.committed_at + self.options.resolve_margin
        if moment < OLDEST_RESOLUTION:
            log.section(
                f"resolving as of {OLDEST_RESOLUTION:%Y-%m-%d}, not the commit's date: building a setup.py "
                "project needs setuptools>=40.8.0 (PEP 517's fallback), released then"
            )
            return OLDEST_RESOLUTION
        log.section(f"resolving as of {moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC (commit date + margin)")
        return moment

    def _index_has_upload_times(self, log: BuildLog) -> bool:
        """Asked of the index once per builder; a clear log line, never a failed build, when it cannot."""
        with self._lock:
            if self._upload_times is None:
                index = self.options.network.index_url or default_index_url()
                try:
                    available = has_upload_times(index, self.options.network.ca_bundle)
                    self._upload_times = (
                        available,
                        f"the package index {index} gives no upload times (PEP 700)",
                    )
                except PackageIndexError as exc:
                    self._upload_times = (
                        False,
                        f"the package index could not be asked for upload times: {exc}",
                    )
            available, why_not = self._upload_times
        if not available:
            log.section(f"resolving the newest releases: {why_not}, so the commit's date cannot be used")
        return available

    def _install(
        self,
        checkout: Checkout,
        plan: InstallPlan,
        recipe: InstallRecipe,
        tag: str,
        log: BuildLog,
        deadline: float,
    ) -> tuple[InstallRecipe, docker.models.images.Image]:
        """Run the recipe in a build container, repairing as the errors say; commit the result."""
        spec = checkout.spec
        network = self.options.network
        container = self.install_container(recipe.base_image, build_container_name(spec.name))
        try:
            container.put_archive("/", tar_directory(checkout.path, REPO_DIR.strip("/")))
            env = {**network.environment(), "UV_LINK_MODE": "copy", **recipe.install_env}
            run = BuildRunner(container, log, env, deadline, self.cancel)
            self._stage(spec, "install", f"{len(recipe.steps)} steps")
            before, after = missing_tools(container, network.apt_options())
            planned = [*before, recipe.steps[0], *after, *recipe.steps[1:]]
            steps = run_steps(run, planned, plan, checkout.version, self.options.repair_rounds)
            # Before collecting: a released copy installed over the checkout would be what collection sees.
            steps = keep_project_installed(run, steps)
            self._stage(spec, "collect", recipe.test_command)
            steps, test_command = collect(run, steps, recipe.test_command, checkout, plan, self.options)
            self._stage(spec, "commit", tag)
            if run("sanitize git history", GIT_SANITIZE, {}) != 0:
                raise BuildFailed("install_failed", "could not sanitize the git history (see the log)")
            # SWE-bench's harness applies a prediction and runs its eval script in /testbed: the image
            # then runs exported tasks (`forager tasks export`) with no image of the harness's own.
            run("/testbed for SWE-bench's harness", f"ln -sfn {REPO_DIR} /testbed", {})
            recipe = replace(recipe, steps=tuple(steps), test_command=test_command)
            repository, version = tag.split(":")
            labels = {
                "forager.source": spec.text,
                "forager.commit": checkout.commit,
                **({"forager.history-cut": checkout.history_cut} if checkout.history_cut else {}),
                "forager.recipe": recipe.digest(),
                "forager.test-command": recipe.test_command,
            }
            conf = {"Labels": labels, "WorkingDir": REPO_DIR}
            container.commit(
                repository=repository, tag=version, conf=conf, changes=['CMD ["bash"]', CLEAR_OWNER]
            )
            return recipe, self.client.images.get(tag)
        finally:
            self.containers.remove(container)

    def install_container(self, image: str, name: str) -> docker.models.containers.Container:
        """A running container of ``image`` to install in: host network, the proxy's settings, the shared
        package cache. Remove it with ``self.containers.remove``."""
        options = self.options.network.container_options()
        # A mount, not volumes=: docker-py would write volumes= into the container's config, and the
        # committed image would then give every container an anonymous volume at /root/.cache.
        options["mounts"] = [*options.get("mounts", []), Mount("/root/.cache", CACHE_VOLUME, type="volume")]
        return self.containers.start(image, name, environment=IMAGE_ENV, network_mode="host", **options)

    def _baseline(
        self, spec: SourceSpec, tag: str, test_command: str, log: BuildLog
    ) -> tuple[Baseline | None, Verdict]:
        settings = RunSettings(
            limit=self.options.test_timeout,
            per_test_timeout=self.options.per_test_timeout,
            workers=min(8, int(self.client.info().get("NCPU") or 1)),
            runs=self.options.test_runs,
            min_pass_ratio=self.options.min_pass_ratio,
        )

        def execute(script: str, number: int, paths: tuple[str, ...]) -> Execution:
            self._stage(spec, "tests", f"run {number}")
            return self._test_run(tag, script, number, paths)

        result = run_baseline(test_command, settings, execute, log.section)
        for note in result.notes:
            log.section(note)
        return result.baseline, result.verdict

    def _test_run(self, tag: str, script: str, number: int, paths: tuple[str, ...]) -> Execution:
        """One run of ``script`` in a fresh container with no network; ``paths`` are the files it
        wrote to bring back (those it did not write are left out)."""
        container = self.containers.start(
            tag,
            build_container_name(f"{tag.split('/')[-1]}-test{number}"),
            command=["sh", "-c", script],
            network_mode="none",
            mem_limit=self.options.memory,
            pids_limit=self.options.pids_limit,
        )
        try:
            try:
                exit_code = container.wait(timeout=int(self.options.test_timeout) + 30)["StatusCode"]
            except (ReadTimeout, RequestsConnectionError):
                exit_code = 124
            output = container.logs().decode(errors="replace")
            files = {}
            for path in paths:
                with contextlib.suppress(NotFound, ForagerError):
                    stream, _ = container.get_archive(path)
                    files[path] = untar_single(b"".join(stream))
            return Execution(exit_code, output, files)
        finally:
            self.containers.remove(container)

    def _base(self, checkout: Checkout, plan: InstallPlan, log: BuildLog) -> tuple[str, str, str | None]:
        """The base image to build on, its id, and its CPython line (None for a base given with --base)."""
        if self.options.base_image:
            try:
                return self.options.base_image, self.client.images.get(self.options.base_image).id, None
            except ImageNotFound as exc:
                raise BuildFailed(
                    "docker_error",
                    f"base image {self.options.base_image} is missing: build or load it into the engine "
                    "first",
                ) from exc
        try:
            when, python = checkout.committed_at, self.options.python
            choice = choose_for(checkout.path, plan.requires_python, python=python, committed_at=when)
        except UnsupportedPython as exc:
            raise BuildFailed("unsupported_python", str(exc)) from exc
        log.section(f"Python {choice.base.python}", *choice.evidence)
        self._stage(checkout.spec, "base", f"{choice.base.tag} (Python {choice.base.python})")
        logs = self.home / "logs" / choice.base.log_folder
        try:
            image = ensure_base_image(self.client, self.options.network, base=choice.base, log_dir=logs)
        except BaseImageError as exc:  # the machine's failure, not the project's: a result like the engine's
            raise BuildFailed(
                "docker_error", f"{exc} (then: forager images base --python {choice.base.python})"
            ) from exc
        return image.tag, image.id, choice.base.python

    def _engine_failure(self, spec: SourceSpec, exc: Exception) -> BuildFailed:
        """The engine's error as the build's failure; BuildCancelled when a cancel removed its containers."""
        if self.cancel.is_set():
            raise BuildCancelled(f"{spec.text}: build cancelled") from exc
        return BuildFailed("docker_error", f"the Docker engine failed: {exc}")

    def cached(self, tag: str) -> BuildResult | None:
        """The ready image ``tag`` as a cached build result, or None when the store or the engine lacks it."""
        record = self.store.get_image(tag)
        if record is None or record.status != ImageStatus.READY:
            return None
        try:
            self.client.images.get(tag)
        except ImageNotFound:
            return None
        return BuildResult(
            record.repository.source, record.repository.name, record.status, None, "already built", tag,
            record.repository.commit, record.tests_passed, record.tests_total, 0.0, record.size_bytes,
            record.unique_bytes, Path(record.log_path) if record.log_path else None,
        )  # fmt: skip

    def _stage(self, spec: SourceSpec, stage: str, message: str = "") -> None:
        if self.cancel.is_set() and stage not in ("ready", "failed"):
            raise BuildCancelled(f"{spec.text}: build cancelled")
        self.progress(ProgressEvent(spec.name, stage, message))


def planned_recipe(
    plan: InstallPlan, checkout: Checkout, base_image: str, resolve_as_of: datetime | None
) -> tuple[InstallRecipe, list[str], str]:
    """The recipe a build of ``checkout`` starts from, before any repair (set-up steps and test command
    included), the notes of its set-up steps, and why it tests with its test command."""
    recipe = plan_recipe(plan, checkout, base_image, resolve_as_of)
    recipe, setup_notes = add_setup_steps(recipe, checkout.path)
    test_command, why = choose_test_command(checkout.path, recipe.test_command, plan.test_paths)
    return replace(recipe, test_command=test_command), setup_notes, why


def _digest(recipe: InstallRecipe, base_id: str) -> str:
    return hashlib.sha256(f"{BUILDER_VERSION}\n{base_id}\n{recipe.digest()}".encode()).hexdigest()
