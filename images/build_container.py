"""The containers of image builds: starting and removing them (so a Ctrl-C can remove them all), running
install commands in one (:class:`BuildRunner`), probing a base image for the tools Forager needs, and
moving files in and out as tar archives."""

from __future__ import annotations

import contextlib
import io
import shlex
import tarfile
import threading
import time
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from core.errors import ForagerError
from images.build_log import BuildLog
from images.build_result import BuildCancelled, BuildFailed
from images.engine import exec_logged, owner_labels
from images.recipe import REPO_DIR, VENV_DIR, RecipeStep


class BuildContainers:
    """The containers builds have started and not yet removed; safe to use from several threads."""

    def __init__(self, client: docker.DockerClient, cancel: threading.Event) -> None:
        self.client = client
        self.cancel = cancel
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def start(self, image: str, name: str, command: list[str] | None = None, **options: object):
        if self.cancel.is_set():
            raise BuildCancelled("build cancelled")
        with self._lock:
            self._names.add(name)
        return self.client.containers.run(
            image, command or ["sleep", "infinity"], name=name, detach=True, labels=owner_labels(), **options
        )

    def remove(self, container: docker.models.containers.Container) -> None:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: someone else (a gc, a kill_all) is removing it already
                raise
        with self._lock:
            self._names.discard(container.name)

    def remove_all(self) -> None:
        """Remove every container still running now (Ctrl-C), whatever its build is doing."""
        with self._lock:
            names = list(self._names)
        for name in names:
            try:
                self.client.containers.get(name).remove(force=True)
            except (NotFound, DockerException):
                continue


class BuildRunner:
    """Runs commands in the build container: logged, bounded by the build's deadline, cancellable."""

    def __init__(
        self,
        container: docker.models.containers.Container,
        log: BuildLog,
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
            raise BuildFailed("timeout", "the build ran out of time (raise --timeout)")
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
            raise BuildFailed("timeout", f"the build ran out of time during: {title} (raise --timeout)")
        if code in (137, None) and not self._container_running():
            # The command was killed with its container (removed, OOM, engine restart): not the project's
            # failure. The engine reports the exec's exit as 137 before it forgets the container.
            raise BuildFailed("docker_error", f"the build container stopped during: {title}")
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

#: What the build, the runtime and grading need from a base image, and the Debian package that has it.
_TOOLS = {"git": "git", "pgrep": "procps", "patch": "patch", "setsid": "util-linux", "timeout": "coreutils"}


def missing_tools(
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


def tar_directory(path: Path, arcname: str) -> bytes:
    """``path`` as an uncompressed tar archive under ``arcname``, owned by root (for ``put_archive``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=arcname, filter=_as_root)
    return buffer.getvalue()


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def untar_single(data: bytes) -> bytes:
    """The content of the first file of a tar archive (what ``get_archive`` gives for one file)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        stream = tar.extractfile(member) if member else None
        if stream is None:
            raise ForagerError("the archive of a test run's file is empty")
        return stream.read()


def remove_image(client: docker.DockerClient, tag: str) -> None:
    with contextlib.suppress(ImageNotFound, DockerException):
        client.images.remove(tag, force=True)
