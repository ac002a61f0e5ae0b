"""What a build is asked to do and what it gives back: :class:`BuildOptions`, :class:`BuildResult`, and
the two ways a build stops early (:class:`BuildCancelled`, :class:`BuildFailed`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from core.errors import ForagerError
from images.baseline import FailureClass
from images.proxy import NetworkSettings
from storage import ImageStatus


@dataclass(frozen=True)
class BuildOptions:
    """How images are built. The defaults suit the 2-core machines Forager was developed on."""

    base_image: str | None = None
    """The image to build on; None: Forager's base for the Python the project needs (made on demand)."""
    python: str | None = None
    """The CPython line (``3.13``) to build on instead of the one chosen from what the project declares."""
    network: NetworkSettings = field(default_factory=NetworkSettings)
    timeout: float = 1800.0
    """Seconds for the whole build, tests excluded."""
    test_timeout: float = 900.0
    """Seconds for one baseline test run."""
    per_test_timeout: float = 120.0
    """Seconds for one test (its setup, call and teardown) in a baseline run; 0 for no limit."""
    test_runs: int = 2
    min_pass_ratio: float = 0.8
    repair_rounds: int = 8
    memory: str = "4g"
    """Memory limit of baseline test containers."""
    pids_limit: int = 4096
    rebuild: bool = False
    """Build again even when an image with the same source and recipe is ready."""
    resolve_newest: bool = False
    """Resolve unpinned requirements to their newest releases instead of as of the commit's date."""
    resolve_margin: timedelta = timedelta(days=1)
    """How long after the commit a release still counts as one its authors could have had."""


@dataclass(frozen=True)
class BuildResult:
    """What one build produced; also recorded in the store."""

    source: str
    name: str
    status: ImageStatus
    failure_class: FailureClass | None
    reason: str
    tag: str | None = None
    commit: str | None = None
    tests_passed: int = 0
    tests_total: int = 0
    seconds: float = 0.0
    size_bytes: int | None = None
    unique_bytes: int | None = None
    log_path: Path | None = None
    cached: bool = False
    """True when an identical ready image existed and nothing was built."""


class BuildCancelled(ForagerError):
    """The build was interrupted (Ctrl-C); nothing of it was recorded."""

    exit_code = 130


class BuildFailed(Exception):
    """Internal to the build: a stage failed with a failure class; becomes a failed BuildResult."""

    def __init__(self, failure_class: FailureClass, reason: str) -> None:
        super().__init__(reason)
        self.failure_class: FailureClass = failure_class
        self.reason = reason
        self.base_image: str | None = None
        """The base the build had chosen when it failed (None: it failed before choosing)."""
