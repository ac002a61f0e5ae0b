"""The shared base images every repository image is layered on, one per Debian release and so per CPython.

No container registry is reachable from a farm machine, so a base is made locally: ``debootstrap
--variant=minbase`` into a folder, ``docker import`` of that folder, then one layer with Python, pip,
venv, git and build tools installed over the host's network. Each step is skipped when its image
already exists, so :func:`ensure_base_image` is cheap to call again.

Debian's own ``python3`` is the interpreter, so each release gives one CPython line: bullseye's 3.9,
bookworm's 3.11 (:data:`DEFAULT_BASE`) and trixie's 3.13 (:data:`BASES`), chosen per project by
:mod:`images.python_choice`: a project needing ``>=3.12`` gets trixie, and an old commit, tested up to
3.8 and pinning what ran then, bullseye.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from images.engine import CLEAR_OWNER, EngineError, build_container_name, exec_logged, owner_labels
from images.proxy import NetworkSettings


@dataclass(frozen=True)
class DebianBase:
    """One base image: a Debian release and the CPython line its ``python3`` package gives."""

    suite: str
    python: str
    """The CPython release line, ``MAJOR.MINOR``."""
    python_version: str
    """The exact version the release ships, for checking ``Requires-Python`` specifiers."""

    @property
    def tag(self) -> str:
        return f"forager/base:{self.suite}"

    @property
    def minbase_image(self) -> str:
        return f"forager/debian:{self.suite}-minbase"

    @property
    def log_folder(self) -> str:
        """The folder under ``<home>/logs`` for its build logs and Dockerfile."""
        return "base" if self == DEFAULT_BASE else f"base-{self.suite}"


DEFAULT_BASE = DebianBase("bookworm", "3.11", "3.11.2")
#: Every base Forager can make, oldest Python first.
BASES = (DebianBase("bullseye", "3.9", "3.9.2"), DEFAULT_BASE, DebianBase("trixie", "3.13", "3.13.5"))
SUITE = DEFAULT_BASE.suite
MINBASE_IMAGE = DEFAULT_BASE.minbase_image
BASE_IMAGE = DEFAULT_BASE.tag
#: Bumped when the base's content changes: an older base is rebuilt, and so every image on it.
BASE_VERSION = "2"
VERSION_LABEL = "forager.base-version"
#: coverage and pytest-cov, outside every project's environment (see _install_script).
COVERAGE_DIR = "/opt/forager/coverage"

#: What every repository image can rely on (plus uv, from the package index). ``patch`` and ``procps``
#: serve grading and the runtime.
BASE_PACKAGES = (
    "python3",
    "python3-dev",
    "python3-pip",
    "python3-venv",
    "git",
    "build-essential",
    "pkg-config",
    "ca-certificates",
    "patch",
    "procps",
)
BASE_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def base_for_python(line: str) -> DebianBase | None:
    """The base whose CPython is ``line`` (``3.13``, or the exact ``3.13.5``), or None."""
    return next((base for base in BASES if line in (base.python, base.python_version)), None)


class BaseImageError(ForagerError):
    """The base image could not be made."""


@dataclass(frozen=True)
class BaseImage:
    """The base image as it is in the engine."""

    tag: str
    id: str
    size_bytes: int
    built: bool
    """True when this call built it, False when it was already there."""


def find_base_image(client: docker.DockerClient, tag: str = BASE_IMAGE) -> docker.models.images.Image | None:
    """The image with ``tag``, or None when the engine has none."""
    try:
        return client.images.get(tag)
    except ImageNotFound:
        return None


def ensure_base_image(
    client: docker.DockerClient,
    network: NetworkSettings,
    *,
    base: DebianBase = DEFAULT_BASE,
    mirror: str | None = None,
    log_dir: Path,
    rebuild: bool = False,
    progress: Progress = no_progress,
) -> BaseImage:
    """Make ``base`` unless it exists (or ``rebuild``); return what the engine has.

    ``mirror`` is the Debian mirror for debootstrap and apt; by default the host's own, read from
    ``/etc/apt``. Logs of each step go to ``log_dir``, and the Dockerfile equivalent of the package
    layer is written there too so the image can be remade by hand. Builds of one base are serialized
    across threads and processes (parallel builds needing it wait for the first to make it).
    """
    existing = find_base_image(client, base.tag)
    if existing and not rebuild and existing.labels.get(VERSION_LABEL) == BASE_VERSION:
        return BaseImage(base.tag, existing.id, existing.attrs["Size"], built=False)
    with _build_lock(base):
        existing = find_base_image(client, base.tag)
        if existing and not rebuild and existing.labels.get(VERSION_LABEL) == BASE_VERSION:
            return BaseImage(base.tag, existing.id, existing.attrs["Size"], built=False)
        log_dir.mkdir(parents=True, exist_ok=True)
        if rebuild or not find_base_image(client, base.minbase_image):
            _import_minbase(client, base, mirror or host_debian_mirror(), log_dir, progress)
        _install_packages(client, base, network, log_dir, progress)
        (log_dir / "Dockerfile").write_text(base_dockerfile(base))
    image = client.images.get(base.tag)
    progress(ProgressEvent("base image", "done", base.tag))
    return BaseImage(base.tag, image.id, image.attrs["Size"], built=True)


@contextlib.contextmanager
def _build_lock(base: DebianBase) -> Iterator[None]:
    """Held while ``base`` is made: an advisory lock on a file that every process of this host sees.

    ``flock`` locks belong to the open file, so two threads of one process exclude each other too.
    """
    path = Path(tempfile.gettempdir()) / f"forager-base-{base.suite}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_dockerfile(base: DebianBase = DEFAULT_BASE) -> str:
    """The package layer as a Dockerfile, for rebuilding the base by hand (build with ``--network host``)."""
    env = " ".join(f"{key}={value}" for key, value in BASE_ENV.items())
    option = "" if base == DEFAULT_BASE else f" --python {base.python}"
    return (
        f"# Made by `forager images base{option}` on top of {base.minbase_image}, which is\n"
        f"# `debootstrap --variant=minbase {base.suite} ROOTFS MIRROR` imported with `docker import`.\n"
        f"FROM {base.minbase_image}\n"
        f"ENV {env}\n"
        f"RUN {_install_script()}\n"
        'CMD ["bash"]\n'
    )


def host_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses for the main archive (not security or updates).

    The archive holds every release, so a bookworm host's mirror serves trixie's base too."""
    for uris, suites in _apt_sources(apt_dir):
        if {base.suite for base in BASES} & set(suites) or "stable" in suites:
            return uris[0]
    raise BaseImageError(
        f"no Debian {' or '.join(base.suite for base in BASES)} mirror is configured in "
        f"{apt_dir}/sources.list*: pass --mirror URL"
    )


def _apt_sources(apt_dir: Path) -> Iterable[tuple[list[str], list[str]]]:
    """(URIs, suites) of every ``deb`` source, one-line and deb822 formats alike."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            for line in path.read_text().splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 3 and words[0] == "deb":
                    words = [w for w in words[1:] if not w.startswith("[")]
                    yield [words[0]], [words[1]]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("uris"):
                yield fields["uris"].split(), fields.get("suites", "").split()


def _import_minbase(
    client: docker.DockerClient, base: DebianBase, mirror: str, log_dir: Path, progress: Progress
) -> None:
    if os.geteuid() != 0:
        raise BaseImageError("debootstrap needs root: run `forager images base` as root (e.g. with sudo)")
    if not shutil.which("debootstrap"):
        raise BaseImageError("debootstrap is not installed: apt-get install -y debootstrap")
    with tempfile.TemporaryDirectory(prefix="forager-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(ProgressEvent("base image", "debootstrap", f"{base.suite} minbase from {mirror}"))
        log_path = log_dir / "debootstrap.log"
        with log_path.open("wb") as log:
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", base.suite, str(rootfs), mirror],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if done.returncode != 0:
            raise BaseImageError(f"debootstrap failed (exit {done.returncode}): see {log_path}")
        progress(ProgressEvent("base image", "import", base.minbase_image))
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        shutil.rmtree(rootfs)
        repository, tag = base.minbase_image.split(":")
        try:
            # From a file, not a stream: docker-py's chunked stream upload is rejected by the engine.
            client.api.import_image_from_file(str(archive), repository=repository, tag=tag)
        except APIError as exc:
            raise EngineError(f"docker import of the base root filesystem failed: {exc.explanation}") from exc


def _install_script(apt_options: list[str] | None = None) -> str:
    opts = " ".join(apt_options or [])
    apt = f"apt-get {opts}".replace("  ", " ") if opts else "apt-get"
    packages = " ".join(BASE_PACKAGES)
    # uv installs a repository's dependencies several times faster than pip (3.5 s against 7.7 s for
    # attrs[tests] here, cold); it lives in the base so that no repository layer carries it.
    # pip's options as variables: bullseye's pip 20.3 has no --break-system-packages (nor needs it) and
    # no --root-user-action, and pip skips variables it has no option for.
    pip = "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --no-cache-dir"
    return (
        f"{apt} update && {apt} install -y --no-install-recommends {packages}"
        " && apt-get clean && rm -rf /var/lib/apt/lists/*"
        f" && {pip} uv"
        # Coverage for measuring which tests cover which lines, kept out of every project's venv: it is
        # put on PYTHONPATH only for that measurement (no dependencies: pytest comes from the project).
        f" && {pip} --no-deps --target {COVERAGE_DIR} coverage pytest-cov"
    )


def _install_packages(
    client: docker.DockerClient, base: DebianBase, network: NetworkSettings, log_dir: Path, progress: Progress
) -> None:
    progress(ProgressEvent("base image", "packages", ", ".join(BASE_PACKAGES)))
    log_path = log_dir / "packages.log"
    log_path.unlink(missing_ok=True)
    container = client.containers.run(
        base.minbase_image,
        ["sleep", "infinity"],
        detach=True,
        name=build_container_name("base"),
        labels=owner_labels(),
        environment=BASE_ENV,
        network_mode="host",
        **network.container_options(),
    )
    try:
        status = exec_logged(
            container, _install_script(network.apt_options()), log_path, network.environment()
        )
        if status != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BaseImageError(
                f"installing the base packages failed (exit {status}): {' / '.join(tail)}; "
                f"full log: {log_path}"
            )
        repository, tag = base.tag.split(":")
        container.commit(
            repository=repository,
            tag=tag,
            changes=['CMD ["bash"]', f"LABEL {VERSION_LABEL}={BASE_VERSION}", CLEAR_OWNER],
        )
    finally:
        container.remove(force=True)
