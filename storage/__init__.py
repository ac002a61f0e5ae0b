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
)
from storage.store import Store

__all__ = [
    "Base",
    "Episode",
    "EpisodeStatus",
    "Image",
    "ImageStatus",
    "Repository",
    "SchemaError",
    "Step",
    "Store",
    "StoreError",
    "Task",
    "TaskKind",
    "TaskStatus",
]
