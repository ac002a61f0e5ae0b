"""The running-environment protocol: what a backend (``envs.backend``) starts, Docker's and Kubernetes' alike.

A runtime is one container (or pod) started from a repository image, with one persistent shell in it.
Tools and the agent loop see only this protocol, never the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.errors import ForagerError


class EnvironmentDied(ForagerError):
    """The environment's container went away mid-episode (killed, OOM, engine gone).

    The agent loop classifies it as an infrastructure failure, not as something the model did.
    """


class DiffError(ForagerError):
    """The repository's diff cannot be taken: its git data was removed or broken (by the agent, as a rule)."""


@dataclass(frozen=True)
class Observation:
    """What one command produced, ready to show a model."""

    output: str
    """stdout and stderr interleaved, decoded (undecodable bytes escaped), capped: see ``elided``."""
    exit_code: int | None
    """None when the command was killed for running out of time."""
    duration: float
    """Seconds from sending the command to its end."""
    timed_out: bool = False
    elided: int = 0
    """Bytes dropped from the middle of the output to keep it under the cap (head and tail are kept)."""
    note: str = ""
    """What the environment did besides running the command (e.g. restarted the shell)."""


class Runtime(Protocol):
    """One running environment."""

    @property
    def workdir(self) -> str:
        """The repository's path inside the environment (the shell starts there)."""
        ...

    def run(self, command: str, timeout: float | None = None) -> Observation:
        """Run ``command`` in the persistent shell (cwd and exported variables persist), stdin closed."""
        ...

    def read_file(self, path: str) -> bytes:
        """The file's bytes; ``FileNotFoundError``/``IsADirectoryError`` as for a local file."""
        ...

    def write_file(self, path: str, content: bytes) -> None:
        """Create or replace a file, creating its parent directories."""
        ...

    def exists(self, path: str) -> bool:
        """Whether anything exists at ``path``."""
        ...

    def diff(self, base: str = "HEAD") -> str:
        """``git diff`` of the working tree against ``base``, new (untracked, not ignored) files included.

        Raises :class:`DiffError` when git cannot say."""
        ...

    def close(self) -> None:
        """Stop and remove the environment; safe to call twice."""
        ...
