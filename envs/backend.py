"""Where environments run: the backend protocol, the resources of one environment, and choosing a backend.

A backend starts runtimes (``envs.runtime.Runtime``) from repository images and cleans up what crashed
processes left behind. Callers — the agent, grading, task making, mining — receive a backend and never
import a backend module or its client library: ``make_backend("docker")`` or
``make_backend("kubernetes", namespace=...)`` is the one place a kind is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import ForagerError
from envs.runtime import Runtime

if TYPE_CHECKING:
    from storage import Store

#: The label (Docker) or pod label (Kubernetes) naming the episode an environment belongs to.
EPISODE_LABEL = "forager.episode"
#: How long an environment lives when the caller names no lifetime: long enough for any grading or
#: coverage run, short enough that one nobody removed (its owner SIGKILLed, no gc run) ends the same day.
DEFAULT_LIFETIME = 3 * 3600.0
#: Added to a caller's lifetime: closing, grading and diffing take a little longer than the budget.
LIFETIME_MARGIN = 300.0
#: Linux capabilities an environment keeps (all others are dropped): enough for root to own and change
#: its files, nothing more. Both backends use this list.
CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"]


@dataclass(frozen=True)
class Limits:
    """Resources of one environment."""

    memory: str = "2g"
    cpus: float = 1.0
    pids: int = 512
    output_bytes: int = 32_000
    """Most bytes of one command's output kept (half from the start, half from the end)."""
    timeout: float = 120.0
    """Default seconds a command may run."""


@dataclass(frozen=True)
class Removed:
    """An environment (or build container) that garbage collection removed."""

    id: str
    name: str
    kind: str
    """``episode`` or ``build``."""
    age: timedelta
    reason: str
    """Why it went: ``owner exited``, ``older than <age>`` or ``all``."""


class Backend(Protocol):
    """Where environments run. Safe to share between threads; close it when done."""

    kind: str
    """``docker`` or ``kubernetes``."""

    def start(
        self,
        image: str,
        *,
        episode: str | None = None,
        limits: Limits | None = None,
        workdir: str = "/repo",
        lifetime: float | None = None,
    ) -> Runtime:
        """Start an environment from ``image`` with a shell in ``workdir``; close the runtime when done.

        ``episode`` labels it (a random id if None). ``lifetime`` bounds, in seconds, how long it may exist
        at all (``DEFAULT_LIFETIME`` if None, plus ``LIFETIME_MARGIN``): an environment whose owner died
        without closing it ends itself then. Raises ``ForagerError`` if the image does not exist and
        ``EnvironmentDied`` if it cannot be started.
        """
        ...

    def image_exists(self, image: str) -> bool:
        """Whether ``image`` can be started here without building it."""
        ...

    def collect_garbage(
        self, *, older_than: timedelta | None = None, everything: bool = False, labels: Sequence[str] = ()
    ) -> list[Removed]:
        """Remove environments whose owning process has exited (see ``forager envs gc``); ``labels``
        (``KEY`` or ``KEY=VALUE``) narrow it to the environments carrying all of them."""
        ...

    def close(self) -> None:
        """Release the backend's connections (running environments are closed by their runtimes)."""
        ...


class BackendError(ForagerError):
    """A backend cannot be made: an unknown kind, a missing option, or its service does not answer."""


BACKENDS = ("docker", "kubernetes")


def make_backend(kind: str = "docker", *, store: Store | None = None, **options: Any) -> Backend:
    """The backend named ``kind`` with its options (see each backend's constructor).

    ``docker``: ``client`` (a ``docker.DockerClient``; default: the engine of ``DOCKER_HOST``).
    ``kubernetes``: see ``envs.kubernetes_backend.KubernetesBackend``; with ``store``, pods run the
    registry reference ``forager images push`` recorded there for each image tag.
    """
    if kind == "docker":
        from envs.docker_backend import DockerBackend

        return DockerBackend(**options)
    if kind == "kubernetes":
        from envs.kubernetes_backend import KubernetesBackend

        if store is not None:
            options.setdefault("image_references", store.registry_reference)
        return KubernetesBackend(**options)
    raise BackendError(f"unknown backend {kind!r}: choose one of {', '.join(BACKENDS)}")


def lifetime_seconds(lifetime: float | None) -> int:
    """The whole seconds an environment may live for a caller's ``lifetime``, margin included."""
    return int((DEFAULT_LIFETIME if lifetime is None else lifetime) + LIFETIME_MARGIN)
