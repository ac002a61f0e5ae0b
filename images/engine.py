"""Connecting to the Docker engine, with errors that say how to get one."""

from __future__ import annotations

import secrets
from pathlib import Path

import docker
from docker.errors import DockerException

from storage.errors import ForagerError

#: Build containers are found by this name prefix, not by a label: ``docker commit`` copies a
#: container's labels into the image, and every container made from it would inherit them.
BUILD_CONTAINER_PREFIX = "forager-build-"


class EngineError(ForagerError):
    """No Docker engine answers, or it refused an operation."""


def connect(timeout: int = 60) -> docker.DockerClient:
    """A client for the engine named by ``DOCKER_HOST`` (or the default socket), checked with a ping."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise EngineError(
            f"no Docker engine answers ({describe(exc)}): run scripts/setup.sh to install and start one, "
            "or start yours and set DOCKER_HOST"
        ) from exc
    return client


def describe(exc: Exception) -> str:
    """The useful part of a docker SDK error: docker-py wraps the socket error several times."""
    text = str(exc)
    for marker in ("Error while fetching server API version: ", "Connection aborted.', "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ") or exc.__class__.__name__


def build_container_name(subject: str) -> str:
    """A unique, recognisable name for a build container about ``subject``."""
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in subject)[:60]
    return f"{BUILD_CONTAINER_PREFIX}{safe}-{secrets.token_hex(4)}"


def exec_logged(
    container: docker.models.containers.Container,
    script: str,
    log_path: Path,
    environment: dict[str, str] | None = None,
) -> int:
    """Run ``script`` with ``sh -c`` in a running container, appending its output to ``log_path``.

    The environment is given to this exec only: unlike the container's own environment, it is not
    recorded by ``docker commit``, so proxy settings and CA paths never end up in an image.
    Returns the exit code.
    """
    api = container.client.api
    exec_id = api.exec_create(container.id, ["sh", "-c", script], environment=environment)["Id"]
    with log_path.open("ab") as log:
        for chunk in api.exec_start(exec_id, stream=True):
            log.write(chunk)
    return api.exec_inspect(exec_id)["ExitCode"]
