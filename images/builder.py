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
import io
import json
import re
import shlex
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from images.base import BASE_IMAGE, ensure_base_image
from images.baseline import Baseline, FailureClass, Verdict, log_tail
from images.build_setup import add_setup_steps
from images.detect import InstallPlan, detect
from images.engine import CLEAR_OWNER, build_container_name, exec_logged, owner_labels
from images.forward_repair import forward_step
from images.native import install_failure
from images.proxy import NetworkSettings
from images.pypi import PackageIndexError, default_index_url, has_upload_times
from images.python_choice import UnsupportedPython, choose_for
from images.readers.pytest_config import explicit_test_files
from images.recipe import IMAGE_ENV, REPO_DIR, VENV_DIR, InstallRecipe, RecipeStep
from images.repair import Repair, diagnose
from images.runners import choose_test_command, runner_of
from images.sources import Checkout, SourceError, SourceSpec, fetch
from images.steps import (
    PYTEST,
    first_change,
    one_package_each,
    plan_recipe,
    without_install_limits,
)
from images.suite_runs import Execution, RunSettings, run_baseline
from storage import Image, ImageStatus, Store

#: Bump when the same plan would turn into different steps: it changes every image tag.
BUILDER_VERSION = "1"
#: Named volume shared by all build containers: pip's and uv's download and wheel caches.
CACHE_VOLUME = "forager-cache"
_CONTINUE = "--continue-on-collection-errors"
_COLLECTED = re.compile(r"^[1-9]\d* tests? collected", re.MULTILINE)

_GIT_SANITIZE = """set -e
git checkout -q --detach HEAD
git remote | while read -r remote; do git remote remove "$remote"; done
git for-each-ref --format='%(refname)' | while read -r ref; do git update-ref -d "$ref"; done
git checkout -q -B main
git reflog expire --expire=now --all
git gc -q --prune=now
git config --global user.name forager && git config --global user.email forager@localhost
git status --porcelain --untracked-files=all | sed -n 's/^?? //p' >> .git/info/exclude
rm -rf /tmp/* /tmp/.[!.]* 2>/dev/null || true"""


@dataclass(frozen=True)
class BuildOptions:
    """How images are built. The defaults suit the 2-core machines Forager was developed on."""

    base_image: str | None = None
    """The image to build on; None: Forager's base for the Python the project needs (made on demand)."""
    python: str | None = None
    """The CPython line (``3.13``) to build on instead of the one chosen from what the project declares."""
    network: NetworkSettings = field(default_factory=NetworkSettings)
    timeout: float = 1800.0
    """Seconds for the whole build, tests excluded."""
    test_timeout: float = 900.0
    """Seconds for one baseline test run."""
    per_test_timeout: float = 120.0
    """Seconds for one test (its setup, call and teardown) in a baseline run; 0 for no limit."""
    test_runs: int = 2
    min_pass_ratio: float = 0.8
    repair_rounds: int = 8
    memory: str = "4g"
    """Memory limit of baseline test containers."""
    pids_limit: int = 4096
    rebuild: bool = False
    """Build again even when an image with the same source and recipe is ready."""
    resolve_newest: bool = False
    """Resolve unpinned requirements to their newest releases instead of as of the commit's date."""
    resolve_margin: timedelta = timedelta(days=1)
    """How long after the commit a release still counts as one its authors could have had."""


@dataclass(frozen=True)
class BuildResult:
    """What one build produced; also recorded in the store."""

    source: str
    name: str
    status: ImageStatus
    failure_class: FailureClass | None
    reason: str
    tag: str | None = None
    commit: str | None = None
    tests_passed: int = 0
    tests_total: int = 0
    seconds: float = 0.0
    size_bytes: int | None = None
    unique_bytes: int | None = None
    log_path: Path | None = None
    cached: bool = False
    """True when an identical ready image existed and nothing was built."""


class BuildCancelled(ForagerError):
    """The build was interrupted (Ctrl-C); nothing of it was recorded."""

    exit_code = 130


class _BuildFailed(Exception):
    """Internal: a stage failed with a failure class; becomes a failed BuildResult."""

    def __init__(self, failure_class: FailureClass, reason: str) -> None:
        super().__init__(reason)
        self.failure_class: FailureClass = failure_class
        self.reason = reason


def image_tag(name: str, commit: str, recipe_digest: str) -> str:
    """``forager/OWNER__REPO:COMMIT12-SPEC8``, lower-cased to what Docker accepts."""
    repository = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._") or "repo"
    repository = re.sub(r"([_.-])[_.-]+", lambda m: "__" if m[0] == "__" else m[1], repository)
    return f"forager/{repository}:{commit[:12]}-{recipe_digest[:8]}"


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
        self._containers: set[str] = set()
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
        log = _Log(log_path)
        scratch = self.home / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        checkout: Checkout | None = None
        with tempfile.TemporaryDirectory(dir=scratch, prefix="src-") as tmp:
            try:
                self._stage(spec, "fetch", spec.text)
                checkout = self._fetch(spec, Path(tmp) / "src")
                log.section(f"source {spec.text} at {checkout.commit}")
                if checkout.history_cut:
                    log.section(f"history cut to the commit's tree: {checkout.history_cut}")
                result = self._build_checkout(checkout, log, started)
            except _BuildFailed as failed:
                log.section(f"FAILED ({failed.failure_class}): {failed.reason}")
                result = self._record_failure(spec, checkout, failed, log, started)
            except BuildCancelled:
                log.section("cancelled")
                raise
            except (DockerException, RequestsConnectionError) as exc:
                if self.cancel.is_set():
                    raise BuildCancelled(f"{spec.text}: build cancelled") from exc
                failed = _BuildFailed("docker_error", f"the Docker engine failed: {exc}")
                log.section(f"FAILED (docker_error): {exc}")
                result = self._record_failure(spec, checkout, failed, log, started)
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
        with self._lock:
            names = list(self._containers)
        for name in names:
            try:
                self.client.containers.get(name).remove(force=True)
            except (NotFound, DockerException):
                continue

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
            raise _BuildFailed("clone_failed", str(exc)) from exc

    def _build_checkout(self, checkout: Checkout, log: _Log, started: float) -> BuildResult:
        spec = checkout.spec
        plan = detect(checkout.path)
        log.section("detected", *plan.evidence)
        if not plan.is_python:
            raise _BuildFailed("not_python", "no Python project files and no Python code found")
        base_image, base, python = self._base(checkout, plan, log)
        recipe = plan_recipe(plan, checkout, base_image, self._resolve_as_of(checkout, log))
        recipe, setup_notes = add_setup_steps(recipe, checkout.path)
        log.section("build set-up (native code, CI set-up steps)", *setup_notes)
        test_command, why = choose_test_command(checkout.path, recipe.test_command, plan.test_paths)
        log.section(why)
        recipe = replace(recipe, python=python, test_command=test_command)
        tag = image_tag(spec.name, checkout.commit, _digest(recipe, base))
        if not self.options.rebuild and (cached := self.cached(tag)) is not None:
            return replace(cached, seconds=time.monotonic() - started, cached=True)
        deadline = started + self.options.timeout
        recipe, image = self._install(checkout, plan, recipe, tag, log, deadline)
        try:
            baseline, verdict = self._baseline(spec, tag, recipe.test_command, log)
        except BaseException:
            _remove_image(self.client, tag)
            raise
        seconds = time.monotonic() - started
        size = image.attrs["Size"]
        unique = size - self.client.images.get(recipe.base_image).attrs["Size"]
        self._write_artifacts(spec, checkout, recipe, baseline, tag)
        status = ImageStatus.READY if verdict.ready else ImageStatus.FAILED
        passed, total = (baseline.passed, baseline.total) if baseline else (0, 0)
        repository = self.store.get_or_create_repository(spec.text, spec.name, checkout.commit)
        self.store.save_image(
            Image(
                repository_id=repository.id,
                tag=tag,
                docker_id=image.id,
                status=status,
                failure_class=verdict.failure_class,
                base_image=recipe.base_image,
                recipe=recipe.to_json(),
                recipe_hash=recipe.digest(),
                test_command=recipe.test_command,
                baseline=dict(baseline.outcomes) if baseline else {},
                flaky=sorted(baseline.flaky) if baseline else [],
                durations=dict(baseline.durations) if baseline and baseline.durations else None,
                partial=baseline.partial if baseline else False,
                tests_passed=passed,
                tests_total=total,
                size_bytes=size,
                unique_bytes=unique,
                build_seconds=seconds,
                log_path=str(log.path),
                log_tail=None if verdict.ready else log_tail(log.text()),
            )
        )
        log.section(f"{status.value}: {verdict.reason}")
        return BuildResult(
            spec.text, spec.name, status, verdict.failure_class, verdict.reason, tag, checkout.commit,
            passed, total, seconds, size, unique, log.path,
        )  # fmt: skip

    def _resolve_as_of(self, checkout: Checkout, log: _Log) -> datetime | None:
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
        log.section(f"resolving as of {moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC (commit date + margin)")
        return moment

    def _index_has_upload_times(self, log: _Log) -> bool:
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
            log.section(
                f"resolving the newest releases: {why_not}, so the commit's date cannot be used"
            )
        return available

    def _install(
        self,
        checkout: Checkout,
        plan: InstallPlan,
        recipe: InstallRecipe,
        tag: str,
        log: _Log,
        deadline: float,
    ) -> tuple[InstallRecipe, docker.models.images.Image]:
        """Run the recipe in a build container, repairing as the errors say; commit the result."""
        spec = checkout.spec
        network = self.options.network
        options = network.container_options()
        # A mount, not volumes=: docker-py would write volumes= into the container's config, and the
        # committed image would then give every container an anonymous volume at /root/.cache.
        options["mounts"] = [*options.get("mounts", []), Mount("/root/.cache", CACHE_VOLUME, type="volume")]
        container = self._start(
            recipe.base_image,
            build_container_name(spec.name),
            environment=IMAGE_ENV,
            network_mode="host",
            **options,
        )
        try:
            container.put_archive("/", _tar_directory(checkout.path, REPO_DIR.strip("/")))
            env = {**network.environment(), "UV_LINK_MODE": "copy", **recipe.install_env}
            run = _Runner(container, log, env, deadline, self.cancel)
            self._stage(spec, "install", f"{len(recipe.steps)} steps")
            before, after = _missing_tools(container, network.apt_options())
            planned = [*before, recipe.steps[0], *after, *recipe.steps[1:]]
            steps = self._run_steps(run, planned, plan, checkout.version)
            self._stage(spec, "collect", recipe.test_command)
            steps, test_command = self._collect(run, steps, recipe.test_command, checkout, plan)
            steps = _keep_project_editable(run, steps)
            self._stage(spec, "commit", tag)
            if run("sanitize git history", _GIT_SANITIZE, {}) != 0:
                raise _BuildFailed("install_failed", "could not sanitize the git history (see the log)")
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
            self._remove(container)

    def _run_steps(
        self, run: _Runner, steps: list[RecipeStep], plan: InstallPlan, version: str | None
    ) -> list[RecipeStep]:
        """Run each step; on failure try the repairs its log suggests, a bounded number of times.

        A required step that cannot be repaired fails the build; an optional one (a requirements
        file, extra test tools) is skipped, and the test run shows whether it mattered.
        """
        done: list[RecipeStep] = []
        tried: list[Repair] = []
        queue = list(steps)
        rounds = 0
        while queue:
            step = queue.pop(0)
            mark = run.log.size()
            if run(step.why, step.run, step.env) == 0:
                done.append(step)
                continue
            replacement = None
            if rounds < self.options.repair_rounds:
                # Extras only mean something to the step that installs the project itself.
                extras = plan.extras if step.required else ()
                replacement = first_change(
                    diagnose(run.log.since(mark), tried=tried, extras=extras, version=version), step, tried
                )
            if replacement is None and rounds < self.options.repair_rounds:
                replacement = without_install_limits(step, run.env)
            if replacement is not None:
                rounds += 1
                queue[:0] = replacement
            elif not step.required and (one_by_one := one_package_each(step)):
                run.log.section("installing the packages one by one, to keep those that install")
                queue[:0] = one_by_one
            elif not step.required:
                run.log.section(f"skipped: {step.why} could not be installed")
            else:
                raise _BuildFailed(*install_failure(step.why, run.log.since(mark), run.log.last_error(mark)))
        return done

    def _collect(
        self, run: _Runner, steps: list[RecipeStep], test_command: str, checkout: Checkout, plan: InstallPlan
    ) -> tuple[list[RecipeStep], str]:
        """Collect the tests, installing what collection says is missing, until it is clean.

        Returns the steps (with any installs added) and the test command, which names the test files
        explicitly when pytest's default file pattern finds none.
        """
        if runner_of(test_command) != "pytest":
            return steps, test_command  # only pytest collects without running; the baseline shows the rest
        tried: list[Repair] = []
        named_files = False
        for _ in range(self.options.repair_rounds):
            mark = run.log.size()
            code = run("collect tests", f"{test_command} --collect-only -q", {})
            output = run.log.since(mark)
            if (
                code == 5
                and not named_files
                and (files := explicit_test_files(checkout.path, plan.test_paths))
            ):
                named_files = True
                run.log.section("no file matched pytest's test_*.py pattern: naming the test files instead")
                test_command = " ".join(
                    [PYTEST, *map(shlex.quote, plan.pytest_args), *map(shlex.quote, files)]
                )
                continue
            if code in (0, 5):  # 5: nothing collected; the baseline reports it as no_tests
                break
            repairs = diagnose(output, tried=tried, version=checkout.version)
            repairs = [r for r in repairs if r.kind in ("install", "step_back", "step_forward")]
            if not repairs:
                if code == 2 and _COLLECTED.search(output) and _CONTINUE not in test_command:
                    # Some files cannot be collected (an import nothing can install, a warning the
                    # project turns into an error) but the rest can: run the rest.
                    run.log.section(f"collection errors remain: running what collects ({_CONTINUE})")
                    test_command = f"{test_command} {_CONTINUE}"
                    continue
                break  # the baseline classifies what is left
            tried.append(repairs[0])
            step = self._collection_repair(run, repairs[0], checkout)
            if step is not None and run(step.why, step.run, step.env) == 0:
                steps.append(step)
        return steps, test_command

    def _collection_repair(self, run: _Runner, repair: Repair, checkout: Checkout) -> RecipeStep | None:
        """The install step for a repair of collection: the distribution to install, the one to step
        back to its newest release older than the installed one and out before the commit's date, or
        the one to step forward to a release that runs on the interpreter (:mod:`images.forward_repair`)."""
        if repair.kind == "install":
            return RecipeStep(f"uv pip install {shlex.quote(repair.value)}", repair.why)
        installed = run.installed_version(repair.value)
        if repair.kind == "step_forward":
            network = self.options.network
            forward = forward_step(
                repair.value, installed, run.python_version(), repair.why,
                index_url=network.index_url or default_index_url(), ca_bundle=network.ca_bundle,
                margin=self.options.resolve_margin,
            )  # fmt: skip
            if isinstance(forward, str):
                run.log.section(forward)
                return None
            return forward
        if installed is None:
            run.log.section(f"{repair.value} is not installed: nothing to step back")
            return None
        requirement = shlex.quote(f"{repair.value}<{installed}")
        why = f"repair: {repair.why} ({repair.value} {installed} is newer than the project expects)"
        if checkout.committed_at is None:
            return RecipeStep(f"uv pip install {requirement}", why)
        moment = (checkout.committed_at + self.options.resolve_margin).astimezone(UTC)
        return RecipeStep(f"uv pip install --exclude-newer {moment:%Y-%m-%dT%H:%M:%SZ} {requirement}", why)

    def _baseline(
        self, spec: SourceSpec, tag: str, test_command: str, log: _Log
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
        container = self._start(
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
                    files[path] = _untar_single(b"".join(stream))
            return Execution(exit_code, output, files)
        finally:
            self._remove(container)

    # -- helpers --------------------------------------------------------------------------------------

    def _start(self, image: str, name: str, command: list[str] | None = None, **options: object):
        if self.cancel.is_set():
            raise BuildCancelled("build cancelled")
        with self._lock:
            self._containers.add(name)
        return self.client.containers.run(
            image, command or ["sleep", "infinity"], name=name, detach=True, labels=owner_labels(), **options
        )

    def _remove(self, container: docker.models.containers.Container) -> None:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: someone else (a gc, a kill_all) is removing it already
                raise
        with self._lock:
            self._containers.discard(container.name)

    def _base(self, checkout: Checkout, plan: InstallPlan, log: _Log) -> tuple[str, str, str | None]:
        """The base image to build on, its id, and its CPython line (None for a base given with --base)."""
        if self.options.base_image:
            try:
                return self.options.base_image, self.client.images.get(self.options.base_image).id, None
            except ImageNotFound as exc:
                raise ForagerError(
                    f"base image {self.options.base_image} is missing: build or load it into the engine first"
                ) from exc
        try:
            choice = choose_for(checkout.path, plan.requires_python, python=self.options.python)
        except UnsupportedPython as exc:
            raise _BuildFailed("unsupported_python", str(exc)) from exc
        log.section(f"Python {choice.base.python}", *choice.evidence)
        self._stage(checkout.spec, "base", f"{choice.base.tag} (Python {choice.base.python})")
        logs = self.home / "logs" / choice.base.log_folder
        image = ensure_base_image(self.client, self.options.network, base=choice.base, log_dir=logs)
        return image.tag, image.id, choice.base.python

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

    def _record_failure(
        self, spec: SourceSpec, checkout: Checkout | None, failed: _BuildFailed, log: _Log, started: float
    ) -> BuildResult:
        seconds = time.monotonic() - started
        commit = checkout.commit if checkout else None
        repository = self.store.get_or_create_repository(spec.text, spec.name, commit)
        tag = f"failed/{spec.name}:{(commit or 'nocommit')[:12]}"
        self.store.save_image(
            Image(
                repository_id=repository.id,
                tag=tag,
                status=ImageStatus.FAILED,
                failure_class=failed.failure_class,
                base_image=self.options.base_image or BASE_IMAGE,
                recipe={},
                recipe_hash="",
                build_seconds=seconds,
                log_path=str(log.path),
                log_tail=log_tail(log.text()),
            )
        )
        return BuildResult(
            spec.text, spec.name, ImageStatus.FAILED, failed.failure_class, failed.reason, None, commit,
            seconds=seconds, log_path=log.path,
        )  # fmt: skip

    def _write_artifacts(
        self, spec: SourceSpec, checkout: Checkout, recipe: InstallRecipe, baseline: Baseline | None, tag: str
    ) -> None:
        folder = self.home / "images" / tag.replace(":", "/").removeprefix("forager/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(recipe.dockerfile(spec.text, checkout.commit))
        (folder / "recipe.json").write_text(_json(recipe.to_json()))
        if baseline is not None:
            (folder / "baseline.json").write_text(_json(baseline.to_json()))

    def _stage(self, spec: SourceSpec, stage: str, message: str = "") -> None:
        if self.cancel.is_set() and stage not in ("ready", "failed"):
            raise BuildCancelled(f"{spec.text}: build cancelled")
        self.progress(ProgressEvent(spec.name, stage, message))


class _Log:
    """The build log: one file per build, sections headed by ``==>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def section(self, title: str, *lines: str) -> None:
        with self.path.open("a") as stream:
            stream.write(f"==> {title}\n")
            for line in lines:
                stream.write(line if line.endswith("\n") else line + "\n")

    def size(self) -> int:
        return self.path.stat().st_size

    def since(self, mark: int) -> str:
        with self.path.open("rb") as stream:
            stream.seek(mark)
            return stream.read().decode(errors="replace")

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def last_error(self, mark: int) -> str:
        lines = [line.strip() for line in self.since(mark).splitlines() if line.strip()]
        errors = [line for line in lines if re.search(r"error|failed|exception", line, re.IGNORECASE)]
        return (errors or lines or ["no output"])[-1][:300]


class _Runner:
    """Runs commands in the build container: logged, bounded by the build's deadline, cancellable."""

    def __init__(
        self,
        container: docker.models.containers.Container,
        log: _Log,
        env: dict[str, str],
        deadline: float,
        cancel: threading.Event,
    ) -> None:
        self.container = container
        self.log = log
        self.env = env
        self.deadline = deadline
        self.cancel = cancel

    def __call__(self, title: str, command: str, env: dict[str, str]) -> int:
        if self.cancel.is_set():
            raise BuildCancelled("build cancelled")
        remaining = int(self.deadline - time.monotonic())
        if remaining <= 0:
            raise _BuildFailed("timeout", "the build ran out of time (raise --timeout)")
        self.log.section(f"{title}\n$ {command}")
        script = f"cd {REPO_DIR} && timeout -k 10 {remaining} sh -c {shlex.quote(command)}"
        # Every project sits at /repo, so concurrent builds share one uv cache entry for it (the cache
        # volume is shared) and take turns on its lock: waiting is bounded by this build's deadline, not
        # by uv's 5 minutes, after which uv fails the install ("Failed to acquire lock").
        wait = {"UV_LOCK_TIMEOUT": str(remaining)}
        code = exec_logged(self.container, script, self.log.path, {**wait, **self.env, **env})
        if self.cancel.is_set():
            raise BuildCancelled("build cancelled")
        if code in (124, 137) and self.deadline - time.monotonic() <= 1:
            raise _BuildFailed("timeout", f"the build ran out of time during: {title} (raise --timeout)")
        if code in (137, None) and not self._container_running():
            # The command was killed with its container (removed, OOM, engine restart): not the project's
            # failure. The engine reports the exec's exit as 137 before it forgets the container.
            raise _BuildFailed("docker_error", f"the build container stopped during: {title}")
        self.log.section(f"exit {code}")
        return code

    def installed_version(self, distribution: str) -> str | None:
        """The version of ``distribution`` in the project's venv, or None when it is not installed."""
        result = self.container.exec_run([f"{VENV_DIR}/bin/python", "-c", _VERSION_OF, distribution])
        version = result.output.decode(errors="replace").strip()
        return version if result.exit_code == 0 and version else None

    def python_version(self) -> str:
        """The CPython version of the project's venv (``3.11.2``)."""
        script = "import platform; print(platform.python_version())"
        return self.container.exec_run([f"{VENV_DIR}/bin/python", "-c", script]).output.decode().strip()

    def _container_running(self) -> bool:
        # A container being removed can still read as running for a moment after its processes died.
        for attempt in range(5):
            try:
                self.container.reload()
            except NotFound:
                return False
            state = self.container.attrs["State"]
            if not state.get("Running") or state.get("Status") in ("removing", "exited", "dead"):
                return False
            if attempt < 4:
                time.sleep(0.2)
        return True


#: Prints the version of the distribution named by its argument, or nothing when it is not installed.
_VERSION_OF = """import importlib.metadata, sys
try:
    print(importlib.metadata.version(sys.argv[1]))
except importlib.metadata.PackageNotFoundError:
    pass"""

#: Exits 0 when the venv's copy of some distribution is the checkout itself, installed editable.
_EDITABLE_CHECK = f"""python - <<'EOF'
import importlib.metadata, json, sys
for dist in importlib.metadata.distributions():
    url = json.loads(dist.read_text("direct_url.json") or "{{}}")
    if url.get("url") == "file://{REPO_DIR}" and url.get("dir_info", {{}}).get("editable"):
        sys.exit(0)
sys.exit(1)
EOF"""


def _keep_project_editable(run: _Runner, steps: list[RecipeStep]) -> list[RecipeStep]:
    """``steps``, plus the project's editable install again when a later step replaced it.

    A pinned requirements file (jinja2's ``requirements/dev.txt`` pins Jinja2 for Sphinx) installs a
    released copy over the checkout; tests then import site-packages, and neither an agent's fix nor
    an injected bug reaches them. ``--no-deps`` keeps the versions the other steps chose.
    """
    project = next((step for step in steps if step.required and " -e " in f" {step.run} "), None)
    if project is None or run("is the project still installed editable?", _EDITABLE_CHECK, {}) == 0:
        return steps
    again = RecipeStep(
        project.run.replace("uv pip install ", "uv pip install --no-deps ", 1),
        "the project again, editable: a later step installed a released copy over it",
        project.env,
    )
    if run(again.why, again.run, again.env) != 0:
        raise _BuildFailed("install_failed", f"{again.why}, and that failed (see the log)")
    return [*steps, again]


#: What the build, the runtime and grading need from a base image, and the Debian package that has it.
_TOOLS = {"git": "git", "pgrep": "procps", "patch": "patch", "setsid": "util-linux", "timeout": "coreutils"}


def _missing_tools(
    container: docker.models.containers.Container, apt_options: list[str]
) -> tuple[list[RecipeStep], list[RecipeStep]]:
    """Steps adding what a base other than Forager's lacks (``--base python:3.12-slim``): those to run
    before the venv is made (Debian packages) and after (uv, into the venv). None for Forager's base."""
    probe = " ".join(f"command -v {tool} >/dev/null || echo {tool};" for tool in [*_TOOLS, "uv"])
    missing = container.exec_run(["sh", "-c", probe]).output.decode().split()
    lacking = [tool for tool in missing if tool in _TOOLS]
    before = []
    if lacking:
        apt = " ".join(["apt-get", *apt_options])
        packages = " ".join(sorted({_TOOLS[tool] for tool in lacking}))
        before.append(
            RecipeStep(
                f"{apt} update && {apt} install -y --no-install-recommends {packages}"
                " && rm -rf /var/lib/apt/lists/*",
                f"the base image lacks {', '.join(lacking)}",
            )
        )
    after = (
        [RecipeStep(f"{VENV_DIR}/bin/python -m pip install -q uv", "the base image has no uv")]
        if "uv" in missing
        else []
    )
    return before, after


def _digest(recipe: InstallRecipe, base_id: str) -> str:
    return hashlib.sha256(f"{BUILDER_VERSION}\n{base_id}\n{recipe.digest()}".encode()).hexdigest()


def _tar_directory(path: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=arcname, filter=_as_root)
    return buffer.getvalue()


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _untar_single(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        stream = tar.extractfile(member) if member else None
        if stream is None:
            raise ForagerError("the archive of a test run's file is empty")
        return stream.read()


def _remove_image(client: docker.DockerClient, tag: str) -> None:
    with contextlib.suppress(ImageNotFound, DockerException):
        client.images.remove(tag, force=True)


def _json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
