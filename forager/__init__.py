"""Forager: repository images, tasks and agent trajectories for training code models."""

from core.errors import ForagerError
from forager.api import Episode

__all__ = ["Episode", "ForagerError"]
