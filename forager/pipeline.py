"""Foraging on one machine: many episodes at once against one served model, every one stored, graded.

Episodes run as asyncio tasks under a concurrency bound; each writes its episode and steps in one
transaction when it ends, so a killed run leaves no partial episode, and a re-run skips what is done
(episodes already stored for the same task, model and action format count towards the target).
Episodes that end in an infrastructure failure are stored as failed and retried a bounded number of
times; they do not count towards the target.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from core.progress import Progress, ProgressEvent, no_progress
from envs.backend import Backend
from forager.agent import AgentConfig, run_episode
from forager.model import ModelClient
from storage import EpisodeFilter, EpisodeStatus, Store, Task


@dataclass
class ForageSummary:
    """What a foraging run did."""

    episodes: int = 0
    resolved: int = 0
    failed: int = 0
    skipped: int = 0
    """Episodes not run because enough were stored already."""
    exit_reasons: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


async def forage(
    store: Store,
    tasks: list[Task],
    model: ModelClient,
    backend: Backend,
    config: AgentConfig,
    *,
    model_name: str,
    policy: str | None = None,
    episodes_per_task: int = 1,
    concurrency: int = 8,
    infra_retries: int = 2,
    progress: Progress = no_progress,
) -> ForageSummary:
    """Run ``episodes_per_task`` episodes of every task (minus those stored), ``concurrency`` at a time."""
    summary = ForageSummary()
    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    queue: list[Task] = []
    for task in tasks:
        done = store.count_episodes(
            EpisodeFilter(
                task_id=task.id,
                model=model_name,
                status=EpisodeStatus.COMPLETED,
                action_format=config.action_format,
            )
        )
        summary.skipped += min(done, episodes_per_task)
        queue += [task] * max(0, episodes_per_task - done)
    total = len(queue)

    def report(message: str) -> None:
        progress(
            ProgressEvent(
                "forage",
                "running",
                f"{summary.episodes}/{total} done, {summary.resolved} resolved, {summary.failed} failed, "
                f"{summary.tokens_per_second:.0f} tokens/s {message}",
                summary.episodes,
                total,
            )
        )

    async def one(task: Task) -> None:
        async with gate:
            for attempt in range(infra_retries + 1):
                episode, steps = await run_episode(
                    task, task.image, model, backend, config, model_name=model_name, policy=policy
                )
                await asyncio.to_thread(store.save_episode, episode, steps)
                summary.tokens += episode.prompt_tokens + episode.completion_tokens
                summary.seconds = time.monotonic() - started
                if episode.exit_reason != "infra_error":
                    break
                summary.failed += 1
                if attempt < infra_retries:
                    report(f"(retrying {task.instance_id} after an infrastructure failure)")
            summary.episodes += 1
            summary.exit_reasons[episode.exit_reason] += 1
            summary.resolved += bool(episode.resolved)
            summary.failed += episode.status == EpisodeStatus.FAILED and episode.exit_reason != "infra_error"
            report("")

    report("")
    await asyncio.gather(*(one(task) for task in queue))
    summary.seconds = time.monotonic() - started
    return summary
