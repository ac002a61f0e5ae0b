"""Foraging benchmark: episodes per hour and the agent's own overhead per turn, with the oracle server.

    python bench/forage.py [--home .forager-bench] [--tasks 8] [--concurrency 1 8 32]

Uses the verified tasks in the store under ``--home`` (make them with bench/build_corpus.py and
bench/tasks.py), serves the oracle policy on loopback, and runs episodes at each concurrency (enough
episodes to fill it). Prints episodes/hour, resolved share, p50/p90 of the agent-side overhead per turn
(the turn minus model latency and tool execution) and of tool time, and the episode containers alive
at the end. Targets (issue #6): overhead p50 <= 10 ms; 32 concurrent episodes complete on 2 cores; 0
containers left. Episodes are not stored: the benchmark leaves the store as it found it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from envs.backend import EPISODE_LABEL
from envs.docker_backend import DockerBackend
from forager.agent import AgentConfig, EpisodeRun
from forager.model import ModelClient, ModelConfig
from forager.policies.oracle import oracle_app
from forager.policies.server import start_in_thread
from images.engine import connect
from storage import Store, TaskStatus


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".forager-bench"))
    parser.add_argument("--tasks", type=int, default=8, help="distinct tasks to cycle through")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--format", default="cwm_text", choices=["cwm_text", "function_calling"])
    args = parser.parse_args()
    store = Store(f"sqlite:///{(args.home / 'forager.db').resolve()}")
    tasks = store.list_tasks(status=TaskStatus.VERIFIED)[: args.tasks]
    if not tasks:
        raise SystemExit(
            f"no verified task in {args.home}: run bench/build_corpus.py and bench/tasks.py first"
        )
    docker_client = connect()
    before = {c.id for c in docker_client.containers.list(all=True, filters={"label": EPISODE_LABEL})}
    base_url, stop = start_in_thread(oracle_app(store))
    try:
        for concurrency in args.concurrency:
            episodes = max(concurrency, len(tasks))
            chosen = [tasks[i % len(tasks)] for i in range(episodes)]
            started = time.monotonic()
            results = asyncio.run(_run(chosen, base_url, docker_client, args.format, concurrency))
            wall = time.monotonic() - started
            turns = [s for _, steps in results for s in steps]
            overhead = sorted(1000 * s.overhead_seconds for s in turns)
            tools = sorted(1000 * s.tool_seconds for s in turns)
            resolved = sum(1 for episode, _ in results if episode.resolved)
            print(
                f"concurrency {concurrency:>3}: {episodes} episodes in {wall:.0f} s = "
                f"{3600 * episodes / wall:.0f} episodes/hour, {resolved}/{episodes} resolved, "
                f"overhead/turn p50 {_pct(overhead, 50):.1f} ms p90 {_pct(overhead, 90):.1f} ms, "
                f"tool p50 {_pct(tools, 50):.0f} ms",
                flush=True,
            )
    finally:
        stop()
        store.close()
    alive = [
        c
        for c in docker_client.containers.list(all=True, filters={"label": EPISODE_LABEL})
        if c.id not in before
    ]
    print(f"episode containers of this run alive at the end: {len(alive)}")


async def _run(tasks, base_url: str, docker_client, action_format: str, concurrency: int):
    gate = asyncio.Semaphore(concurrency)
    config = AgentConfig(action_format=action_format)  # type: ignore[arg-type]
    async with ModelClient(ModelConfig(base_url=base_url, concurrency=concurrency)) as client:

        async def one(task):
            async with gate:
                return await run_episode_with_records(task, client, docker_client, config)

        return await asyncio.gather(*(one(task) for task in tasks))


async def run_episode_with_records(task, client, docker_client, config):
    """run_episode, keeping the in-memory step records (they carry the turn timings)."""
    run = EpisodeRun(task, task.image, client, DockerBackend(docker_client), config, model_name="oracle")
    try:
        episode, _ = await run.play()
        return episode, run.steps
    finally:
        await asyncio.to_thread(run.close)


def _pct(values: list[float], percentile: int) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(percentile / 100 * (len(values) - 1)))]


if __name__ == "__main__":
    main()
