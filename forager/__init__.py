"""Forager: repository images, tasks and agent trajectories for training code models."""

from storage.errors import ForagerError

__all__ = ["ForagerError"]
