"""Forager's own worker image: the checkout installed on the base image, for ``forager worker`` pods.

Made like the base image (``images.base``): a container from :data:`images.base.BASE_IMAGE` with the
host's network, the checkout copied in, Forager installed into ``/opt/forager/venv`` with uv, then ``docker
commit`` — no registry pull, no Dockerfile. ``k8s/Dockerfile`` is the same recipe as a Dockerfile
(:func:`self_dockerfile`, kept equal by a test) for building by hand or in CI.

The image runs as an unprivileged user (uid 10001) and writes nothing outside ``/tmp``, so the worker
Job can mount its root filesystem read-only.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from images.base import BASE_IMAGE, find_base_image
from images.engine import CLEAR_OWNER, build_container_name, exec_logged, owner_labels
from images.proxy import NetworkSettings

SELF_IMAGE = "forager/worker:latest"
#: What of a checkout goes into the image: Forager's packages and what installing them reads.
SOURCE_PATHS = ("pyproject.toml", "README.md", "core", "storage", "images", "envs", "tools", "forager")
WORKER_UID = 10001
_SOURCE_DIR = "/opt/forager-src"
_PREFIX = "/opt/forager/venv"  # beside the base image's /opt/forager/coverage
_SKIPPED = ("__pycache__", ".pyc", ".egg-info")
_ENV = {
    "PATH": f"{_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    # The worker's root filesystem is read-only in the Job: no bytecode written next to the sources.
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "HOME": "/tmp",
    "FORAGER_HOME": "/tmp/forager",
}


class SelfImageError(ForagerError):
    """Forager's worker image could not be made."""


@dataclass(frozen=True)
class SelfImage:
    tag: str
    id: str
    size_bytes: int


def find_checkout(start: Path | None = None) -> Path:
    """The Forager checkout this code runs from (the folder with ``pyproject.toml`` and ``forager/``)."""
    root = start or Path(__file__).resolve().parent.parent
    if not all((root / path).exists() for path in SOURCE_PATHS):
        raise SelfImageError(
            f"{root} is not a Forager checkout (it lacks one of {', '.join(SOURCE_PATHS)}): pass --checkout "
            "with the folder of a clone"
        )
    return root


def build_self_image(
    client: docker.DockerClient,
    checkout: Path,
    network: NetworkSettings,
    *,
    tag: str = SELF_IMAGE,
    log_dir: Path,
    progress: Progress = no_progress,
) -> SelfImage:
    """Install ``checkout`` on the base image and commit it as ``tag``. Logs go to ``log_dir``."""
    if find_base_image(client) is None:
        raise SelfImageError(f"the base image {BASE_IMAGE} is missing: make it with `forager images base`")
    find_checkout(checkout)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "worker-image.log"
    log_path.unlink(missing_ok=True)
    container = client.containers.run(
        BASE_IMAGE, ["sleep", "infinity"], detach=True, name=build_container_name("worker-image"),
        labels=owner_labels(), network_mode="host", **network.container_options(),
    )  # fmt: skip
    try:
        progress(ProgressEvent("worker image", "copy", str(checkout)))
        container.exec_run(["mkdir", "-p", _SOURCE_DIR])
        container.put_archive(_SOURCE_DIR, _source_archive(checkout))
        progress(ProgressEvent("worker image", "install", f"{checkout} into {_PREFIX}"))
        status = exec_logged(container, _install_script(), log_path, network.environment())
        if status != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise SelfImageError(
                f"installing Forager in the image failed (exit {status}): {' / '.join(tail)}; "
                f"full log: {log_path}"
            )
        repository, version = tag.rsplit(":", 1) if ":" in tag.split("/")[-1] else (tag, "latest")
        container.commit(repository=repository, tag=version, changes=_image_changes())
    finally:
        container.remove(force=True)
    image = client.images.get(tag)
    progress(ProgressEvent("worker image", "done", tag))
    return SelfImage(tag, image.id, image.attrs["Size"])


def self_dockerfile() -> str:
    """The same image as a Dockerfile (``k8s/Dockerfile``), built from the checkout's root."""
    copies = "".join(
        f"COPY {path} {_SOURCE_DIR}/{path}\n" if Path(path).suffix else f"COPY {path} {_SOURCE_DIR}/{path}/\n"
        for path in SOURCE_PATHS
    )
    env = " ".join(f"{key}={value}" for key, value in _ENV.items())
    return (
        "# Forager's worker image (what `forager images self` makes, without a Dockerfile). From the\n"
        "# checkout's root, with BuildKit (which reads k8s/Dockerfile.dockerignore):\n"
        "#   docker build --network host -f k8s/Dockerfile -t forager/worker:latest .\n"
        "# Generated by images/self_image.py: change it there.\n"
        f"FROM {BASE_IMAGE}\n"
        f"{copies}"
        f"RUN {_install_script()}\n"
        f"ENV {env}\n"
        f"USER {WORKER_UID}:{WORKER_UID}\n"
        "WORKDIR /tmp\n"
        'CMD ["forager", "--help"]\n'
    )


def self_dockerignore() -> str:
    """``k8s/Dockerfile.dockerignore``: only :data:`SOURCE_PATHS` reach the build."""
    allowed = "".join(f"!{path}\n" for path in SOURCE_PATHS)
    skipped = "".join(f"**/*{name}\n" for name in _SKIPPED)
    return f"# Generated by images/self_image.py.\n*\n{allowed}{skipped}"


def _install_script() -> str:
    # uv (in the base image) resolves and installs several times faster than pip.
    return (
        f"uv venv --python python3 {_PREFIX}"
        f" && uv pip install --no-cache --python {_PREFIX}/bin/python '{_SOURCE_DIR}[postgres]'"
        f" && rm -rf {_SOURCE_DIR}"
        f" && useradd --uid {WORKER_UID} --user-group --no-create-home --home-dir /tmp forager"
    )


def _image_changes() -> list[str]:
    env = [f"ENV {key}={value}" for key, value in _ENV.items()]
    return [*env, f"USER {WORKER_UID}:{WORKER_UID}", "WORKDIR /tmp", 'CMD ["forager", "--help"]', CLEAR_OWNER]


def _source_archive(checkout: Path) -> bytes:
    """A tar of :data:`SOURCE_PATHS` of ``checkout``, without bytecode and build leftovers."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in SOURCE_PATHS:
            tar.add(
                checkout / path,
                arcname=path,
                filter=lambda info: None if any(s in info.name for s in _SKIPPED) else info,
            )
    return buffer.getvalue()
