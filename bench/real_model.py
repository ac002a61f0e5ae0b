"""Foraging with a real served model: episodes/hour, tokens/s and the agent's overhead per turn.

    python -m bench.real_model [--concurrency 1 4] [--episodes 8] [--turns 4] [--cap 128]

Builds the fixture repository's image with a few mutate-fix tasks (in a scratch folder), then runs
episodes against SmolLM2-135M-Instruct served by llama-cpp-python on loopback (the ``realmodel`` extra),
and the same episodes against the oracle policy server, at each concurrency. llama-cpp-python answers
one request at a time per process, so concurrency N runs N server processes (the threads of the machine
shared among them), the episodes spread over them: what llama.cpp's parallel slots give one server.

Per run it prints episodes/hour, generated tokens/s (all episodes' completion tokens over the wall time;
prompt tokens/s beside), the model's latency per turn (p50; the sum over all turns, and the completion
tokens per second of it), the agent's own overhead per turn (the turn minus the model and the tool,
p50/p90), the exit reasons, and the episode containers of this process left at the end (must be 0).
Episodes are not stored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.forage import run_episode_with_records
from forager.agent import AgentConfig
from forager.model import ModelClient, ModelConfig
from forager.policies.oracle import oracle_app
from forager.policies.server import start_in_thread
from images.engine import connect
from storage import Store, TaskStatus
from tests.farm import build_fixture_tasks, containers_of
from tests.llama_server import LlamaServer, smollm2_gguf


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--episodes", type=int, default=8, help="episodes per run")
    parser.add_argument("--turns", type=int, default=4, help="most turns per episode")
    parser.add_argument("--cap", type=int, default=128, help="most tokens per reply")
    parser.add_argument("--n-ctx", type=int, default=2048, help="the served context window")
    parser.add_argument("--format", default="cwm_text", choices=["cwm_text", "function_calling"])
    args = parser.parse_args()
    docker_client = connect()
    with tempfile.TemporaryDirectory(prefix="forager-bench-real-") as scratch:
        root = Path(scratch)
        store = Store(f"sqlite:///{root / 'forager.db'}")
        started = time.monotonic()
        tag = build_fixture_tasks(docker_client, store, root, max_tasks=4)
        tasks = store.list_tasks(status=TaskStatus.VERIFIED)
        print(f"fixture: {len(tasks)} verified tasks in {tag}, made in {time.monotonic() - started:.0f} s")
        config = AgentConfig(
            action_format=args.format, max_turns=args.turns, max_format_errors=args.turns,
            max_completion_tokens=args.cap, context_window=args.n_ctx,
        )  # fmt: skip
        chosen = [tasks[i % len(tasks)] for i in range(args.episodes)]
        try:
            for concurrency in args.concurrency:
                threads = max(1, (os.cpu_count() or 1) // concurrency)
                servers = [
                    LlamaServer(smollm2_gguf(), n_ctx=args.n_ctx, threads=threads) for _ in range(concurrency)
                ]
                try:
                    for server in servers:
                        server.start()
                    urls = [s.base_url for s in servers]
                    _report(f"smollm2 x{concurrency}", chosen, urls, docker_client, config)
                finally:
                    for server in servers:
                        server.stop()
                oracle_url, stop = start_in_thread(oracle_app(store))
                try:
                    oracle = [oracle_url] * concurrency
                    _report(f"oracle  x{concurrency}", chosen, oracle, docker_client, config)
                finally:
                    stop()
        finally:
            store.close()
            docker_client.images.remove(tag, force=True)
    print(f"episode containers of this process left: {len(containers_of(docker_client, [os.getpid()]))}")


def _report(label: str, tasks, base_urls: list[str], docker_client, config: AgentConfig) -> None:
    started = time.monotonic()
    results = asyncio.run(_run(tasks, base_urls, docker_client, config))
    wall = time.monotonic() - started
    turns = [s for _, steps in results for s in steps]
    overhead = sorted(1000 * s.overhead_seconds for s in turns)
    latency = sorted(s.model_seconds for s in turns)
    generated = sum(e.completion_tokens for e, _ in results)
    prompted = sum(e.prompt_tokens for e, _ in results)
    reasons = Counter(e.exit_reason for e, _ in results)
    print(
        f"{label}: {len(results)} episodes, {len(turns)} turns in {wall:.0f} s = "
        f"{3600 * len(results) / wall:.0f} episodes/hour, {generated / wall:.1f} generated tokens/s "
        f"({prompted / wall:.0f} prompt tokens/s), model p50 {statistics.median(latency):.2f} s/turn "
        f"(all turns {sum(latency):.0f} s; {sum(s.completion_tokens or 0 for s in turns) / sum(latency):.1f} "
        "tokens/s while generating), "
        f"overhead/turn p50 {statistics.median(overhead):.1f} ms p90 {_p90(overhead):.1f} ms, "
        f"exits {dict(reasons)}",
        flush=True,
    )
    errors = Counter(e.config["error"] for e, _ in results if e.config.get("error"))
    for error, count in errors.most_common(3):
        print(f"    {count} x error: {error[:300]}", flush=True)


async def _run(tasks, base_urls: list[str], docker_client, config: AgentConfig):
    """The episodes of ``tasks``, as many at once as there are ``base_urls``, each server one at a time."""
    clients = [ModelClient(ModelConfig(base_url=url, concurrency=1, timeout=600)) for url in base_urls]
    free: asyncio.Queue[ModelClient] = asyncio.Queue()
    for client in clients:
        free.put_nowait(client)

    async def one(task):
        client = await free.get()
        try:
            return await run_episode_with_records(task, client, docker_client, config)
        finally:
            free.put_nowait(client)

    try:
        return await asyncio.gather(*(one(task) for task in tasks))
    finally:
        for client in clients:
            await client.close()


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


if __name__ == "__main__":
    main()
