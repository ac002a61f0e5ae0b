"""Removing containers that Forager left behind (a crashed worker must never leak them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import docker
from docker.errors import NotFound

from images.engine import BUILD_CONTAINER_PREFIX

EPISODE_LABEL = "forager.episode"


@dataclass(frozen=True)
class Removed:
    """A container that garbage collection removed."""

    id: str
    name: str
    kind: str
    """``episode`` or ``build``."""
    age: timedelta


def collect_garbage(client: docker.DockerClient, older_than: timedelta = timedelta(0)) -> list[Removed]:
    """Force-remove every episode and build container created more than ``older_than`` ago."""
    episodes = client.containers.list(all=True, filters={"label": EPISODE_LABEL})
    builds = [
        container
        for container in client.containers.list(all=True, filters={"name": BUILD_CONTAINER_PREFIX})
        if container.name.startswith(BUILD_CONTAINER_PREFIX)
    ]
    now = datetime.now(UTC)
    removed: list[Removed] = []
    for kind, containers in (("episode", episodes), ("build", builds)):
        for container in containers:
            age = now - _created(container)
            if age < older_than:
                continue
            try:
                container.remove(force=True)
            except NotFound:
                continue  # another collector or its owner got there first
            removed.append(Removed(container.id, container.name, kind, age))
    return removed


def _created(container: docker.models.containers.Container) -> datetime:
    # The engine reports nanoseconds ("2026-11-21T22:27:26.123456789Z"); fromisoformat takes microseconds.
    stamp = container.attrs["Created"].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction + '000000')[:6]}+00:00")
