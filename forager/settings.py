"""Where Forager keeps its state: the home directory and the store URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path(".forager")


@dataclass(frozen=True)
class Settings:
    """The global options every command shares (``--home``, ``--db``)."""

    home: Path = DEFAULT_HOME
    db: str | None = None

    @property
    def db_url(self) -> str:
        """The store's URL: ``--db`` when given, else the embedded SQLite file in the home directory."""
        return self.db or f"sqlite:///{(self.home / 'forager.db').resolve()}"

    @property
    def logs(self) -> Path:
        """Build and run logs, one folder per subject."""
        return self.home / "logs"
