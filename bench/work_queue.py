"""Work-queue benchmark: claim latency at depth, episodes/hour per worker count, warm-pool start latency.

    python -m bench.work_queue [--postgres URL] [--items 100000] [--workers 1 2 4] [--episodes 12]

Run it from the checkout's root (it builds the test suite's fixture repository). Everything happens in a
new PostgreSQL database of its own (created on the server of ``--postgres``,
default ``$FORAGER_TEST_POSTGRES_URL``, and dropped at the end) and leaves no container behind.

1. Claim latency: ``--items`` queued items (1,000 tasks x attempts), then 1,000 claims one after the
   other, and 1,000 more from 4 threads at once; p50/p99 of one claim. Target (issue 10): p50 <= 5 ms.
2. Episodes/hour: a fixture repository is built and given mutate-fix tasks, the oracle is served by
   ``forager serve oracle``, and for each worker count ``--episodes`` episodes are queued and run by
   that many ``forager worker --until-empty`` processes (Docker backend). Wall time includes each
   worker's start; the machine's CPU use during the run shows where its cores saturate.
3. Episode start: p50/p99 of ``Backend.start`` cold, and from a warm pool of 2 (the pool refilled
   between starts, not timed). Target: <= 50 ms from the pool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from envs.docker_backend import DockerBackend
from envs.pool import WarmPool
from images.engine import connect
from storage import Image, ImageStatus, Store, Task, TaskKind
from tests.farm import FORAGER, build_fixture_tasks, containers_of, private_database, serve_oracle, wait_for

DEFAULT_POSTGRES = "postgresql+psycopg://forager:forager@127.0.0.1:5432/forager_test"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", default=os.environ.get("FORAGER_TEST_POSTGRES_URL", DEFAULT_POSTGRES))
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--episodes", type=int, default=12, help="episodes per worker-count run")
    parser.add_argument("--starts", type=int, default=20, help="environment starts timed per mode")
    parser.add_argument("--claims-only", action="store_true", help="measure claims only (no Docker)")
    args = parser.parse_args()
    # Each part in a database of its own: workers would claim the claim benchmark's items.
    with private_database(args.postgres, "forager_bench") as url:
        claims(url, args.items)
    if args.claims_only:
        return
    with private_database(args.postgres, "forager_bench") as url, tempfile.TemporaryDirectory() as scratch:
        with Store(url) as store:
            tag = build_fixture_tasks(connect(timeout=3600), store, Path(scratch), max_tasks=4)
            print(f"fixture: {len(store.list_tasks(status='verified'))} verified tasks in {tag}", flush=True)
        try:
            throughput(url, Path(scratch), args.workers, args.episodes)
            starts(tag, args.starts)
        finally:
            connect().images.remove(tag, force=True)


# ---- 1. claims ---------------------------------------------------------------------------------------


def claims(url: str, items: int) -> None:
    with Store(url) as store:
        repository = store.get_or_create_repository("/bench/claims", "bench-claims")
        image = store.save_image(
            Image(
                repository_id=repository.id, tag="forager/bench-claims:1", status=ImageStatus.READY,
                base_image="none", recipe={}, recipe_hash="h",
            )
        )  # fmt: skip
        n_tasks = 1000
        tasks = store.add_tasks(
            Task(instance_id=f"bench-{i}", kind=TaskKind.MUTATE_FIX, image_id=image.id, problem_statement="")
            for i in range(n_tasks)
        )
        started = time.perf_counter()
        added = store.enqueue(
            [t.id for t in tasks], action_format="function_calling", episodes_per_task=-(-items // n_tasks)
        )
        print(f"enqueue: {added} items in {time.perf_counter() - started:.1f} s", flush=True)
        store.claim("warm-up", lease_seconds=600)
        floor = [_timed(lambda: _empty_transaction(store)) for _ in range(1000)]
        print(f"an empty write transaction (the floor): {_summary(floor)}", flush=True)
        serial = [_timed(lambda: store.claim("bench", lease_seconds=600)) for _ in range(1000)]
        print(f"claim, one worker, {added} queued:   {_summary(serial)}", flush=True)
        parallel: list[float] = []

        def claimer(name: str) -> None:
            for _ in range(250):
                parallel.append(_timed(lambda: store.claim(name, lease_seconds=600)))

        threads = [threading.Thread(target=claimer, args=(f"bench-{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"claim, 4 threads at once:            {_summary(parallel)}", flush=True)
        leased = store.queue_counts().leased
        assert leased == 2001, f"every claim leased one item ({leased})"


# ---- 2. episodes/hour --------------------------------------------------------------------------------


def throughput(url: str, scratch: Path, worker_counts: list[int], episodes: int) -> None:
    with Store(url) as store:
        tasks = store.list_tasks(status="verified")
    common = [*FORAGER, "--db", url, "--home", str(scratch / "home")]
    oracle, model = serve_oracle(url, scratch / "home")
    try:
        per_task, baseline = -(-episodes // len(tasks)), None
        done = 0
        for n in worker_counts:
            with Store(url) as store:
                # More attempts of the same tasks: every run queues ``episodes`` (rounded up) new items.
                queued = store.enqueue(
                    [t.id for t in tasks], action_format="function_calling", episodes_per_task=done + per_task
                )
                done += per_task
            cpu_before, started = _cpu(), time.monotonic()
            workers = [
                subprocess.Popen(
                    [*common, "worker", "--model", model, "--until-empty", "--poll", "0.5"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )
                for _ in range(n)
            ]  # fmt: skip
            for worker in workers:
                _out, err = worker.communicate()
                if worker.returncode != 0:
                    raise SystemExit(f"a worker failed: {err[-2000:]}")
            wall = time.monotonic() - started
            busy = _busy(cpu_before, _cpu())
            rate = 3600 * queued / wall
            baseline = baseline or rate
            print(
                f"{n} worker(s): {queued} episodes in {wall:.0f} s = {rate:.0f} episodes/hour "
                f"({rate / baseline:.2f}x one worker), CPU busy {100 * busy:.0f}% of {os.cpu_count()} cores",
                flush=True,
            )
        with Store(url) as store:
            counts = store.queue_counts()
            print(
                f"queue at the end: {counts.done} done, {counts.failed} failed, {counts.remaining} left; "
                f"{store.count_episodes()} episodes stored",
                flush=True,
            )
    finally:
        oracle.terminate()
        oracle.wait(30)
    _no_containers_left()


# ---- 3. episode start ----------------------------------------------------------------------------------


def starts(tag: str, n: int) -> None:
    client = connect()
    backend = DockerBackend(client)
    cold = []
    for _ in range(n):
        started = time.perf_counter()
        runtime = backend.start(tag)
        cold.append(time.perf_counter() - started)
        runtime.close()
    print(f"episode start, cold:      {_summary(cold)}", flush=True)
    warm = []
    with WarmPool(DockerBackend(client), 2) as pool:
        pool.want([tag, tag])
        for _ in range(n):
            wait_for(lambda: len(pool._ready) == 2, 120)
            started = time.perf_counter()
            runtime = pool.start(tag)
            warm.append(time.perf_counter() - started)
            runtime.close()
        hits = f"{pool.hits} hits, {pool.misses} misses"
        print(f"episode start, warm pool: {_summary(warm)} ({hits})", flush=True)
    _no_containers_left()


# ---- helpers ---------------------------------------------------------------------------------------------


def _empty_transaction(store: Store) -> None:
    with store.session() as session:
        session.execute(sa.select(1))


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _summary(seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms ({len(ms)} samples)"


def _cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def _no_containers_left() -> None:
    alive = containers_of(connect(), [os.getpid()])
    print(f"episode containers of this process left: {len(alive)}", flush=True)


if __name__ == "__main__":
    now = datetime.now(UTC)
    print(f"bench/work_queue.py at {now:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores", flush=True)
    main()
