"""A queue worker: claim an episode from the store, run it on a backend, store it, repeat.

Any number of workers share one queue (``storage.queue``): several processes on one machine, machines
with their own Docker engines, or the pods of a Kubernetes Indexed Job. Each holds one item at a time
under a lease that a heartbeat extends while the episode runs; the episode and the item's completion are
written in one transaction, refused if the lease was lost, so an item yields at most one episode even
when a worker presumed dead comes back. A worker killed outright leaves its item leased until the lease
expires; then another worker claims it again (up to the item's ``max_attempts``).

``stop`` (SIGTERM, Ctrl-C) stops claiming: the episode under way gets ``grace`` seconds to finish and be
stored, then is abandoned and its item released for another worker; a second ``stop`` abandons it at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import ForagerError
from envs.backend import Backend, Removed
from envs.pool import WarmPool
from envs.runtime import EnvironmentDied, Runtime
from forager.agent import AgentConfig, run_episode
from forager.model import ModelClient
from forager.prompts import Prompts
from storage import Episode, Lease, Step, Store

log = logging.getLogger(__name__)

#: Episodes in a row that end in a model error before the worker gives up: its model server is down.
MAX_MODEL_ERRORS = 3
#: The ``AgentConfig`` fields a work item carries (``AgentConfig.to_json`` plus grading's budget).
_CONFIG_FIELDS = (
    "max_turns", "max_tokens", "wall_clock", "command_timeout", "max_format_errors", "observation_chars",
    "grade_timeout", "max_completion_tokens", "context_window", "shortened_chars", "reasoning",
)  # fmt: skip


def item_config(config: AgentConfig) -> dict[str, Any]:
    """What a work item records of ``config``: budgets, and the prompt templates if they are not the
    packaged ones (the worker may run elsewhere, without the files)."""
    data = {name: getattr(config, name) for name in _CONFIG_FIELDS}
    if config.prompts != Prompts.load():
        data["prompts"] = {"system": config.prompts.system, "task": config.prompts.task}
    return data


def agent_config(lease: Lease) -> AgentConfig:
    """The ``AgentConfig`` a work item was enqueued with."""
    data = lease.config
    prompts = Prompts(**data["prompts"]) if "prompts" in data else Prompts.load()
    known = {name: data[name] for name in _CONFIG_FIELDS if name in data}
    return AgentConfig(action_format=lease.action_format, prompts=prompts, **known)  # type: ignore[arg-type]


def worker_name() -> str:
    """``host:pid:token``: unique among live workers, and says where a lease holder runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class WorkerOptions:
    lease_seconds: float = 120.0
    """How long a claim holds without a heartbeat: a dead worker's item waits this long to be re-run."""
    action_format: str | None = None
    """Claim only items of this format (None: any)."""
    until_empty: bool = False
    """Exit once no item is queued or leased, instead of waiting for more."""
    poll_seconds: float = 5.0
    """How long to wait before looking again when nothing is claimable."""
    grace: float = 25.0
    """Seconds the episode under way may take to finish after ``stop``, before it is released."""
    name: str = field(default_factory=worker_name)

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds / 3


@dataclass
class WorkerSummary:
    """What a worker did."""

    done: int = 0
    failed: int = 0
    """Items that ended failed, with their failed episode stored."""
    retried: int = 0
    """Items given back after an infrastructure failure, to be tried again."""
    released: int = 0
    """Items given back unfinished (stopping, or the model server failing)."""
    lost: int = 0
    """Items whose lease expired under this worker: another worker owns their outcome."""


class Worker:
    """Claims and runs items until stopped (or, ``until_empty``, until no work is left)."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        model: ModelClient,
        *,
        model_name: str,
        policy: str | None = None,
        options: WorkerOptions | None = None,
        report: Callable[[str], None] = log.info,
    ) -> None:
        self.store = store
        self.backend = backend
        self.model = model
        self.model_name = model_name
        self.policy = policy
        self.options = options or WorkerOptions()
        self.report = report
        self.summary = WorkerSummary()
        self._stops = 0
        self._stopping: asyncio.Event | None = None
        self._abandon: asyncio.Event | None = None
        self._model_errors = 0

    def stop(self) -> None:
        """Stop claiming; a second call also abandons the episode under way (its item is released)."""
        self._stops += 1
        if self._stopping is not None:
            self._stopping.set()
            if self._stops > 1:
                self._abandon.set()

    async def run(self) -> WorkerSummary:
        """Work until stopped, or until the queue is empty with ``until_empty``."""
        self._stopping, self._abandon = asyncio.Event(), asyncio.Event()
        if self._stops:
            self._stopping.set()
        options = self.options
        while not self._stopping.is_set():
            lease = await asyncio.to_thread(
                self.store.claim,
                options.name,
                lease_seconds=options.lease_seconds,
                action_format=options.action_format,
            )
            if lease is None:
                if options.until_empty and (await asyncio.to_thread(self._remaining)) == 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), options.poll_seconds)
                continue
            await self._warm(lease)
            await self._work(lease)
        return self.summary

    def _remaining(self) -> int:
        return self.store.queue_counts(action_format=self.options.action_format).remaining

    async def _warm(self, lease: Lease) -> None:
        if isinstance(self.backend, WarmPool):
            upcoming = await asyncio.to_thread(
                self.store.next_images, self.backend.size, action_format=self.options.action_format
            )
            # The claimed item still needs its grading environment; then the items after it.
            self.backend.want([lease.image_tag, *upcoming])

    async def _work(self, lease: Lease) -> None:
        task = await asyncio.to_thread(self.store.get_task, lease.task_id)
        assert task is not None, "work items reference their task"
        name = f"{task.instance_id}#{lease.attempt}"
        self.report(f"{name}: claimed ({lease.image_tag}, claim {lease.claim} of {lease.max_attempts})")
        environments = _Environments(self.backend)
        episode_run = asyncio.create_task(
            run_episode(
                task, task.image, self.model, environments, agent_config(lease),
                model_name=self.model_name, policy=self.policy,
            )
        )  # fmt: skip
        lost = asyncio.Event()
        heartbeats = asyncio.create_task(self._heartbeat(lease, lost))
        try:
            records = await self._finish_or_abandon(episode_run, lost, environments)
        except Exception as exc:  # a Forager bug: give the item back (counted) rather than sit on it
            await self._release(lease, f"the worker failed: {exc!r}", counted=True)
            raise
        finally:
            heartbeats.cancel()
        if lost.is_set():
            self.summary.lost += 1
            self.report(f"{name}: lease lost (another worker may hold the item now); episode dropped")
        elif records is None:
            await self._release(lease, "its worker stopped")
            self.report(f"{name}: stopping; the item was given back")
        else:
            await self._store(lease, name, *records)

    async def _finish_or_abandon(
        self,
        episode_run: asyncio.Task[tuple[Episode, list[Step]]],
        lost: asyncio.Event,
        environments: _Environments,
    ) -> tuple[Episode, list[Step]] | None:
        """The episode's records; None if it was abandoned (stopping, or the lease lost)."""
        assert self._stopping is not None and self._abandon is not None
        waits = [asyncio.create_task(event.wait()) for event in (self._stopping, self._abandon, lost)]
        stopping, abandon, lease_lost = waits
        try:
            await asyncio.wait({episode_run, stopping, lease_lost}, return_when=asyncio.FIRST_COMPLETED)
            if not episode_run.done() and not lost.is_set():
                self.report(f"stopping: the episode under way has {self.options.grace:.0f} s to finish")
                await asyncio.wait(
                    {episode_run, abandon, lease_lost}, timeout=self.options.grace,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
        finally:
            for wait in waits:
                wait.cancel()
        if not episode_run.done():
            # Close its environments first: a cancelled task leaves its threads running (a command, a
            # grading run, an environment still starting), and they end once their environment is gone.
            await asyncio.to_thread(environments.abandon)
            episode_run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await episode_run
        return None if episode_run.cancelled() or lost.is_set() else episode_run.result()

    async def _heartbeat(self, lease: Lease, lost: asyncio.Event) -> None:
        """Extend the lease until cancelled; set ``lost`` if it was lost."""
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            try:
                renewed = await asyncio.to_thread(
                    self.store.heartbeat, lease, lease_seconds=self.options.lease_seconds
                )
            except ForagerError as exc:  # the database is briefly unreachable: try again next beat
                self.report(f"heartbeat failed ({exc}); retrying")
                continue
            if renewed is None:
                lost.set()
                return

    async def _store(self, lease: Lease, name: str, episode: Episode, steps: list[Step]) -> None:
        reason = episode.exit_reason
        if reason == "model_error":
            self._model_errors += 1
            await self._release(lease, f"model error: {episode.config.get('error')}")
            if self._model_errors >= MAX_MODEL_ERRORS:
                raise ForagerError(
                    f"{self._model_errors} episodes in a row failed on the model server "
                    f"({episode.config.get('error')}): check --model; their items were given back"
                )
            return
        self._model_errors = 0
        if reason == "infra_error" and not lease.last_attempt:
            error = f"infra_error: {episode.config.get('error')}"
            if await asyncio.to_thread(self.store.release, lease, counted=True, error=error):
                self.summary.retried += 1
            self.report(f"{name}#{lease.attempt}: infrastructure failure, queued again ({error})")
            return
        failed = reason == "infra_error"
        if not await asyncio.to_thread(self.store.complete, lease, episode, steps, failed=failed):
            self.summary.lost += 1
            self.report(f"{name}#{lease.attempt}: lease lost before storing; episode dropped")
            return
        if failed:
            self.summary.failed += 1
        else:
            self.summary.done += 1
        outcome = "resolved" if episode.resolved else "not resolved"
        self.report(f"{name}#{lease.attempt}: {reason}, {outcome}, episode {episode.id}")

    async def _release(self, lease: Lease, why: str, *, counted: bool = False) -> None:
        if await asyncio.to_thread(self.store.release, lease, counted=counted, error=why):
            self.summary.released += 1


class _Environments:
    """The backend as one episode sees it: every environment it starts is known, so that abandoning the
    episode removes them all, those whose start was still under way included."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.kind = backend.kind
        self._started: list[Runtime] = []
        self._abandoned = False
        self._lock = threading.Lock()

    def start(self, image: str, **options: Any) -> Runtime:
        runtime = self.backend.start(image, **options)
        with self._lock:
            if not self._abandoned:
                self._started.append(runtime)
                return runtime
        runtime.close()
        raise EnvironmentDied("the episode was abandoned while its environment started")

    def image_exists(self, image: str) -> bool:
        return self.backend.image_exists(image)

    def collect_garbage(self, **options: Any) -> list[Removed]:
        return self.backend.collect_garbage(**options)

    def close(self) -> None:
        """Nothing: the worker's backend outlives its episodes."""

    def abandon(self) -> None:
        """Close every environment of the episode, and any it starts from now on."""
        with self._lock:
            self._abandoned = True
            started, self._started = self._started, []
        for runtime in started:
            with contextlib.suppress(ForagerError):
                runtime.close()
