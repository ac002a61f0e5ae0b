"""The one progress interface every long operation reports through.

A long operation takes a ``progress`` callable and calls it with a :class:`ProgressEvent` whenever its
stage changes or it has something to say. The CLI renders the events with rich; library callers pass
their own callable or nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One report from a long operation.

    ``subject`` names what the work is about (a repository, ``base image``), ``stage`` is a short word
    for where it is (``debootstrap``, ``install``, ``tests``), ``message`` is an optional free-text
    detail, and ``completed``/``total`` give a count when the stage has one.
    """

    subject: str
    stage: str
    message: str = ""
    completed: int | None = None
    total: int | None = None


Progress = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """The default callback: ignore every event."""
