"""Removing containers that Forager left behind (a crashed worker must never leak them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import docker
from docker.errors import NotFound

from images.engine import BUILD_CONTAINER_PREFIX, Owner, owner_state

EPISODE_LABEL = "forager.episode"


@dataclass(frozen=True)
class Removed:
    """A container that garbage collection removed."""

    id: str
    name: str
    kind: str
    """``episode`` or ``build``."""
    age: timedelta
    reason: str
    """Why it went: ``owner exited``, ``older than <age>`` or ``all``."""


def collect_garbage(
    client: docker.DockerClient, *, older_than: timedelta | None = None, everything: bool = False
) -> list[Removed]:
    """Force-remove the episode and build containers that nobody will clean up.

    By default those whose Forager process ran on this machine and has exited (killed, crashed, its
    machine's power cut), so it is safe while other Forager processes work. ``older_than`` also takes
    those at least that old whose owner cannot be checked from here: made by Forager processes on
    other machines sharing this engine, or by a Forager from before owners were recorded. A live
    process's containers stay however old they are, unless ``everything``, which takes them all.
    """
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
            owner = owner_state(container.labels or {})  # the engine answers null for no labels
            if everything:
                reason = "all"
            elif owner is Owner.EXITED:
                reason = "owner exited"
            elif owner is Owner.UNKNOWN and older_than is not None and age >= older_than:
                reason = f"older than {older_than}"
            else:
                continue
            try:
                container.remove(force=True)
            except NotFound:
                continue  # another collector or its owner got there first
            removed.append(Removed(container.id, container.name, kind, age, reason))
    return removed


def _created(container: docker.models.containers.Container) -> datetime:
    # The engine reports nanoseconds ("2026-11-21T22:27:26.123456789Z"); fromisoformat takes microseconds.
    stamp = container.attrs["Created"].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction + '000000')[:6]}+00:00")
