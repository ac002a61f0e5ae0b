"""The Docker backend: environments are containers on one Docker engine (``envs.docker_runtime``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

from envs.backend import EPISODE_LABEL, Limits, Removed
from envs.docker_runtime import DockerRuntime
from images.engine import BUILD_CONTAINER_PREFIX, Owner, connect, owner_state

#: Garbage collection looks again this long after a pass that removed something: a container whose
#: create was in flight when its owner was killed is made by the engine after the owner is gone.
_SETTLE_SECONDS = 1.0
#: Most passes of one collection (each after the previous removed something).
_MAX_PASSES = 5


class DockerBackend:
    """Environments as locked-down containers on a Docker engine (``client``; default: ``DOCKER_HOST``)."""

    kind = "docker"

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self.client = client if client is not None else connect()

    def start(
        self,
        image: str,
        *,
        episode: str | None = None,
        limits: Limits | None = None,
        workdir: str = "/repo",
        lifetime: float | None = None,
    ) -> DockerRuntime:
        return DockerRuntime.start(
            self.client, image, episode=episode, limits=limits, workdir=workdir, lifetime=lifetime
        )

    def image_exists(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except ImageNotFound:
            return False
        return True

    def collect_garbage(
        self, *, older_than: timedelta | None = None, everything: bool = False, labels: Sequence[str] = ()
    ) -> list[Removed]:
        """Force-remove the episode and build containers that nobody will clean up.

        By default those whose Forager process ran on this machine and has exited (killed, crashed, its
        machine's power cut), so it is safe while other Forager processes work. ``older_than`` also takes
        those at least that old whose owner cannot be checked from here: made by Forager processes on
        other machines sharing this engine, or by a Forager from before owners were recorded. A live
        process's containers stay however old they are, unless ``everything``, which takes them all.
        ``labels`` (``KEY`` or ``KEY=VALUE``) limit all this to the containers carrying every one of them.
        """
        removed: list[Removed] = []
        for _ in range(_MAX_PASSES):
            found = self._collect_once(older_than, everything, labels)
            removed += found
            if not found:
                break
            time.sleep(_SETTLE_SECONDS)
        return removed

    def _collect_once(
        self, older_than: timedelta | None, everything: bool, labels: Sequence[str]
    ) -> list[Removed]:
        # ignore_removed: the SDK inspects each listed container, and other processes remove theirs meanwhile.
        episodes = self.client.containers.list(
            all=True, filters={"label": [EPISODE_LABEL, *labels]}, ignore_removed=True
        )
        named = {"name": BUILD_CONTAINER_PREFIX, **({"label": list(labels)} if labels else {})}
        builds = [
            container
            for container in self.client.containers.list(all=True, filters=named, ignore_removed=True)
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

    def close(self) -> None:
        with contextlib.suppress(DockerException):
            self.client.close()


def _created(container: docker.models.containers.Container) -> datetime:
    # The engine reports nanoseconds ("2026-11-21T22:27:26.123456789Z"); fromisoformat takes microseconds.
    stamp = container.attrs["Created"].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction + '000000')[:6]}+00:00")
