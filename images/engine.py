"""Connecting to the Docker engine, with errors that say how to get one."""

from __future__ import annotations

import os
import secrets
import socket
from enum import StrEnum
from pathlib import Path

import docker
from docker.errors import DockerException

from core.errors import ForagerError

#: Build containers are found by this name prefix, not by a label: ``docker commit`` copies a
#: container's labels into the image, and every container made from it would inherit them.
BUILD_CONTAINER_PREFIX = "forager-build-"

#: Which Forager process made a container, as ``host:pid:start``: garbage collection removes only the
#: containers whose process has exited, so it never pulls an environment from under running work.
#: ``start`` is the process's start time in clock ticks since boot, so that a reused pid is no owner.
OWNER_LABEL = "forager.owner"

#: The ``changes`` entry for ``docker commit`` that clears the owner: a commit copies the container's
#: labels into the image, and an image belongs to no process.
CLEAR_OWNER = f'LABEL {OWNER_LABEL}=""'


class Owner(StrEnum):
    """Whether the process named by a container's owner label is still running."""

    ALIVE = "alive"
    EXITED = "exited"
    UNKNOWN = "unknown"
    """Another machine's process, or a container made before owners were recorded."""


def owner_labels() -> dict[str, str]:
    """The labels marking a container as this process's."""
    pid = os.getpid()
    return {OWNER_LABEL: f"{socket.gethostname()}:{pid}:{_start_time(pid) or ''}"}


def owner_state(labels: dict[str, str]) -> Owner:
    """Whether the owner recorded in a container's ``labels`` is still running."""
    host, _, rest = labels.get(OWNER_LABEL, "").partition(":")
    pid, _, start = rest.partition(":")
    if not pid.isdigit() or not start or host != socket.gethostname():
        return Owner.UNKNOWN  # not ours to judge, or no /proc to judge by
    return Owner.ALIVE if _start_time(int(pid)) == start else Owner.EXITED


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), or None if it is not running.

    A zombie (state ``Z``: killed, not yet reaped by its parent) still has its stat file and start time,
    but it will never remove its containers again: it counts as not running.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] in ("Z", "X") else fields[19]


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
