"""Forager's SQL-indexed store of repositories, images, tasks, episodes and their steps.

``Store`` is the only code that speaks SQL; the models are plain typed SQLAlchemy classes. This package
imports no other Forager package, so every other one may import it.
"""

from storage.errors import SchemaError, StoreError
from storage.models import (
    Base,
    Episode,
    EpisodeStatus,
    Image,
    ImageStatus,
    Repository,
    Step,
    Task,
    TaskKind,
    TaskStatus,
    WorkItem,
    WorkState,
)
from storage.queries import EpisodeFilter
from storage.queue import Lease, QueueCounts
from storage.stats import GroupStats, StoreStats
from storage.store import Store

__all__ = [
    "Base",
    "Episode",
    "EpisodeFilter",
    "EpisodeStatus",
    "GroupStats",
    "Image",
    "ImageStatus",
    "Lease",
    "QueueCounts",
    "Repository",
    "SchemaError",
    "Step",
    "Store",
    "StoreError",
    "StoreStats",
    "Task",
    "TaskKind",
    "TaskStatus",
    "WorkItem",
    "WorkState",
]
