"""Task-generation benchmark: mutate-fix yield and cost over the image corpus.

    python bench/tasks.py [--home .forager-bench] [--max 5] [--seed 0]

Runs ``forager tasks mutate`` logic on every ready image in the store under ``--home`` (build them
first with bench/build_corpus.py) and prints, per operator and overall: candidates, validated, yield,
median validation seconds and test executions per validated task, and how many fewer tests ran than
validating every candidate with the full suite would have (candidates x stable suite size, against the
tests actually run for all candidates, rejected ones included; and again counting the one coverage run
per image, which full-suite validation would not need). Then a sample of the tasks is graded
again in fresh environments, gold patch and untouched start. Targets (issue #5): yield >= 60%, >= 10x.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

from core.errors import ForagerError
from envs.docker_backend import DockerBackend
from envs.mutate import OPERATORS
from envs.mutate_fix import MutateOptions, OperatorStats, generate
from envs.tasks import verify
from images.engine import connect
from storage import ImageStatus, Store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".forager-bench"))
    parser.add_argument("--max", type=int, default=5, help="tasks per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify", type=int, default=20, help="tasks to grade again, both ways, at the end")
    args = parser.parse_args()
    store = Store(f"sqlite:///{(args.home / 'forager.db').resolve()}")
    backend = DockerBackend(connect())
    totals: dict[str, OperatorStats] = defaultdict(OperatorStats)
    full_suite = 0
    coverage_runs = 0
    per_image: list[float] = []
    started = time.monotonic()
    for image in store.list_images(status=ImageStatus.READY):
        cache = args.home / "bench-tasks" / image.tag.replace("/", "_").replace(":", "_")
        try:
            report = generate(
                backend, store, image, MutateOptions(max_tasks=args.max, seed=args.seed), cache_dir=cache
            )
        except ForagerError as exc:  # no coverage, a dead environment: that image only
            print(f"{image.repository.name}: skipped ({exc})")
            continue
        validated = len(report.tasks)
        candidates = sum(s.candidates for s in report.stats.values())
        ran = sum(s.all_executions for s in report.stats.values())
        if ran:
            per_image.append(candidates * report.suite_size / ran)
        coverage_runs += report.suite_size
        print(
            f"{image.repository.name:<26} {validated} tasks from {candidates} candidates, "
            f"{ran} test executions, {report.suite_size} stable tests",
            flush=True,
        )
        for name, stats in report.stats.items():
            total = totals[name]
            total.candidates += stats.candidates
            total.validated += stats.validated
            total.seconds += stats.seconds
            total.executions += stats.executions
            total.all_executions += stats.all_executions
            full_suite += stats.candidates * report.suite_size

    print(f"\n{'operator':<30} {'cand.':>6} {'valid.':>6} {'yield':>6} {'med s':>6} {'med runs':>8}")
    for name in [*OPERATORS, "overall"]:
        stats = _overall(totals) if name == "overall" else totals.get(name, OperatorStats())
        yield_ = f"{100 * stats.validated / stats.candidates:.0f}%" if stats.candidates else "-"
        seconds = f"{statistics.median(stats.seconds):.1f}" if stats.seconds else "-"
        runs = f"{statistics.median(stats.executions):.0f}" if stats.executions else "-"
        print(f"{name:<30} {stats.candidates:>6} {stats.validated:>6} {yield_:>6} {seconds:>6} {runs:>8}")
    ours = _overall(totals).all_executions
    if ours:
        print(f"\ntest executions: {ours} run; the full suite per candidate: {full_suite}")
        print(
            f"ratio:           {full_suite / ours:.1f}x fewer "
            f"(median per image {statistics.median(per_image):.1f}x)"
        )
        print(
            f"counting the one coverage run per image ({coverage_runs} executions) too: "
            f"{full_suite / (ours + coverage_runs):.1f}x fewer"
        )
    print(f"wall time: {time.monotonic() - started:.0f} s")
    sample = random.Random(args.seed).sample(store.list_tasks(), min(args.verify, len(store.list_tasks())))
    verified = sum(verify(backend, task, task.image).ok for task in sample)
    print(f"graded again: {verified}/{len(sample)} resolve with the gold patch and not without it")
    store.close()


def _overall(totals: dict[str, OperatorStats]) -> OperatorStats:
    overall = OperatorStats()
    for stats in totals.values():
        overall.candidates += stats.candidates
        overall.validated += stats.validated
        overall.seconds += stats.seconds
        overall.executions += stats.executions
        overall.all_executions += stats.all_executions
    return overall


if __name__ == "__main__":
    main()
