"""A warm pool: a backend that keeps environments of the images the next episodes need already started.

Starting an environment costs a container create and start plus a shell (0.1 to 0.4 s on Docker), a pod
seconds more. A worker that knows its next items' images (``want``) lets a background thread start them
ahead, and ``start`` then hands out a ready one in well under a millisecond. An environment is handed out
once and belongs to its caller from then on, who closes it as usual: pooled environments are never
reused across episodes, so nothing one episode did can leak into another.

The pool holds at most ``size`` environments, started with the limits and working directory it was made
with; it serves a ``start`` asking for those and for at most its ``lifetime``. A ``start`` asking for
anything else, or for an image the pool has none of, starts one on the wrapped backend as usual.
``close`` removes every environment still pooled.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from core.errors import ForagerError
from envs.backend import DEFAULT_LIFETIME, Backend, Limits, Removed
from envs.runtime import Runtime

log = logging.getLogger(__name__)

#: Seconds an environment may wait in the pool: it is started to live this much longer than the longest
#: lifetime the pool serves, and replaced when it has waited longer.
_MAX_WAIT = 600.0
#: Seconds the filler waits after a failed start before trying again (an image gone, an engine busy).
_RETRY_SECONDS = 5.0


@dataclass(eq=False)
class _Pooled:
    image: str
    runtime: Runtime
    started: float
    """``time.monotonic()`` when it was started."""


class WarmPool:
    """A ``Backend`` that wraps ``backend`` and keeps up to ``size`` started environments ready."""

    def __init__(
        self,
        backend: Backend,
        size: int,
        *,
        limits: Limits | None = None,
        workdir: str = "/repo",
        lifetime: float | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a warm pool holds at least 1 environment, not {size}")
        self.backend = backend
        self.kind = backend.kind
        self.size = size
        self.limits = limits or Limits()
        self.workdir = workdir
        self.lifetime = DEFAULT_LIFETIME if lifetime is None else lifetime
        self.hits = 0
        self.misses = 0
        self._wanted: list[str] = []
        self._ready: list[_Pooled] = []
        self._starting: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._filler = threading.Thread(target=self._fill, name="forager-warm-pool", daemon=True)
        self._filler.start()

    def want(self, images: list[str]) -> None:
        """The images of the coming episodes, soonest first (repeat an image for each episode of it).

        The pool keeps environments for the first ``size`` of them, and removes those it holds for
        images no longer wanted.
        """
        with self._changed:
            self._wanted = list(images)
            self._changed.notify()

    def start(
        self,
        image: str,
        *,
        episode: str | None = None,
        limits: Limits | None = None,
        workdir: str = "/repo",
        lifetime: float | None = None,
    ) -> Runtime:
        """A pooled environment of ``image`` when one fits the request, else a new one from the backend.

        ``episode`` names only environments started now: a pooled one keeps the label it was started
        with.
        """
        fits = (DEFAULT_LIFETIME if lifetime is None else lifetime) <= self.lifetime
        if fits and (limits or Limits()) == self.limits and workdir == self.workdir:
            while (pooled := self._take(image)) is not None:
                if self._alive(pooled.runtime):
                    self.hits += 1
                    return pooled.runtime
        self.misses += 1
        return self.backend.start(image, episode=episode, limits=limits, workdir=workdir, lifetime=lifetime)

    def image_exists(self, image: str) -> bool:
        return self.backend.image_exists(image)

    def collect_garbage(
        self, *, older_than: timedelta | None = None, everything: bool = False, labels: Sequence[str] = ()
    ) -> list[Removed]:
        return self.backend.collect_garbage(older_than=older_than, everything=everything, labels=labels)

    def close(self) -> None:
        """Stop filling, remove every pooled environment, and close the wrapped backend."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._filler.join()
        with self._lock:
            pooled, self._ready = self._ready, []
        for entry in pooled:
            _close(entry.runtime)
        self.backend.close()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------

    def _take(self, image: str) -> _Pooled | None:
        with self._changed:
            now = time.monotonic()
            for index, entry in enumerate(self._ready):
                if entry.image == image and now - entry.started < _MAX_WAIT:
                    del self._ready[index]
                    self._changed.notify()  # the filler starts its replacement
                    return entry
        return None

    @staticmethod
    def _alive(runtime: Runtime) -> bool:
        """Whether a pooled environment still answers (its container may have been removed meanwhile)."""
        try:
            return runtime.run("true", timeout=10).exit_code == 0
        except ForagerError:
            _close(runtime)
            return False

    def _fill(self) -> None:
        """The filler thread: start what the wanted list lacks, one at a time; drop what it no longer has."""
        while True:
            with self._changed:
                while not self._closed and (job := self._next_job()) is None:
                    self._changed.wait(timeout=30)  # also wakes to drop environments grown too old
                if self._closed:
                    return
                image, extra = job
                self._ready = [entry for entry in self._ready if entry not in extra]
                if image is not None:
                    self._starting[image] += 1
            for entry in extra:
                _close(entry.runtime)
            if image is not None:
                self._start_one(image)

    def _start_one(self, image: str) -> None:
        runtime: Runtime | None = None
        try:
            runtime = self.backend.start(
                image, limits=self.limits, workdir=self.workdir, lifetime=self.lifetime + _MAX_WAIT
            )
        except ForagerError as exc:
            log.warning("warm pool: cannot start %s: %s", image, exc)
        with self._changed:
            self._starting[image] -= 1
            if runtime is None:  # do not spin on an image that cannot start: wait, or for a change
                self._changed.wait(timeout=_RETRY_SECONDS)
                return
            if not self._closed:
                self._ready.append(_Pooled(image, runtime, time.monotonic()))
                return
        _close(runtime)  # the pool was closed while it started

    def _next_job(self) -> tuple[str | None, list[_Pooled]] | None:
        """(an image to start, pooled environments to remove), or None when the pool is as wanted."""
        target = Counter(self._wanted[: self.size])
        have = Counter(entry.image for entry in self._ready) + self._starting
        now = time.monotonic()
        extra: list[_Pooled] = []
        kept: Counter[str] = Counter()
        for entry in self._ready:
            if now - entry.started >= _MAX_WAIT or kept[entry.image] >= target[entry.image]:
                extra.append(entry)
            else:
                kept[entry.image] += 1
        missing = [image for image in target if have[image] - _count(extra, image) < target[image]]
        if not missing and not extra:
            return None
        return (missing[0] if missing else None), extra


def _count(entries: list[_Pooled], image: str) -> int:
    return sum(entry.image == image for entry in entries)


def _close(runtime: Runtime) -> None:
    with contextlib.suppress(ForagerError):
        runtime.close()
