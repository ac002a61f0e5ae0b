"""Forager: repository images, tasks and agent trajectories for training code models."""

from forager.api import Episode
from storage.errors import ForagerError

__all__ = ["Episode", "ForagerError"]
