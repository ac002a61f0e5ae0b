"""How a foraging run is going, read from the store alone (no cluster needed).

Workers of every kind (pods of the Job, processes on other machines) share the queue in the store, so
its counts are the run's progress wherever the workers run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from storage import EpisodeFilter, Store
from storage.types import utcnow


@dataclass(frozen=True)
class RunStatus:
    queued: int
    leased: int
    done: int
    failed: int
    episodes_last_hour: int
    """Episodes stored in the last hour, by any worker: the run's current rate per hour."""
    heartbeats: dict[str, datetime] = field(default_factory=dict)
    """Per worker holding a lease (``host:pid:token``; a pod's host is its name), its last heartbeat."""

    @property
    def remaining(self) -> int:
        return self.queued + self.leased

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["remaining"] = self.remaining
        data["heartbeats"] = {name: at.isoformat() for name, at in self.heartbeats.items()}
        return data


def run_status(store: Store, *, action_format: str | None = None, now: datetime | None = None) -> RunStatus:
    """The queue's counts (of one action format, if given) and the episode rate of the last hour."""
    counts = store.queue_counts(action_format=action_format)
    since = (now or utcnow()) - timedelta(hours=1)
    recent = store.count_episodes(EpisodeFilter(since=since, action_format=action_format))
    return RunStatus(
        counts.queued, counts.leased, counts.done, counts.failed, recent, dict(counts.heartbeats or {})
    )
