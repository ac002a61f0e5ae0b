"""Execution-trace benchmark: throughput, frames, drops and storage over the image corpus.

    python bench/traces.py [--home .forager-bench] [--max-per-image 200] [--workers 2] [--max-calls 5]

Traces every ready image in the store under ``--home`` (build them first with bench/build_corpus.py)
with ``envs.traces.make_traces`` and prints, per image and overall: entry points recorded, kept,
dropped by reason, median frames per kept trace, kept traces per hour (of wall time, and per core; and
per CPU-hour the tracing took in the environments, which other work on the machine does not skew), and
bytes stored per frame (recording and context, compressed as the store keeps them). Entry points an
earlier run stored are not traced again: use a fresh ``--home`` copy, or ``--seed``, to measure again.
Then every frame of every kept trace is checked against the line of the image's file it names.

Targets (issue #13): >= 10,000 traces per hour on this 2-core machine; >= 95% of the traced entry
points give a deterministic trace within budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from pathlib import Path

from core.errors import ForagerError
from envs.docker_backend import DockerBackend
from envs.trace_format import resolved_frames
from envs.traces import ImageReport, TraceOptions, make_traces
from images.engine import connect
from storage import ImageStatus, Store
from storage.traces import TraceFilter

#: Drop reasons that are not a failure to trace: the entry point was never reached in its test, or is
#: a generator (chosen as an entry only when coverage cannot tell).
NOT_TRACED = ("not_called", "generator")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".forager-bench"))
    parser.add_argument("--max-per-image", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-calls", type=int, default=TraceOptions.max_calls, help="0: every call")
    args = parser.parse_args()

    store = Store(f"sqlite:///{(args.home / 'forager.db').resolve()}")
    images = store.list_images(status=ImageStatus.READY)
    if not images:
        raise SystemExit(f"no ready image under {args.home}: build the corpus with bench/build_corpus.py")
    backend = DockerBackend(connect())
    options = TraceOptions(
        max_per_image=args.max_per_image, workers=args.workers, seed=args.seed, max_calls=args.max_calls
    )
    reports: list[ImageReport] = []
    started = time.monotonic()
    print(f"{'image':<48} {'traced':>6} {'kept':>5} {'frames':>6} {'sec':>6} {'cpu s':>6}  dropped")
    for image in images:
        try:
            report = make_traces(
                backend, store, image, options, cache_dir=args.home / "traces" / str(image.id)
            )
        except ForagerError as exc:
            print(f"{image.tag:<48} skipped: {exc}")
            continue
        reports.append(report)
        median = statistics.median(report.frames) if report.frames else 0
        dropped = ", ".join(f"{reason} {n}" for reason, n in report.dropped.most_common()) or "-"
        traced = report.kept + sum(report.dropped.values())
        print(
            f"{image.tag:<48} {traced:>6} {report.kept:>5} {median:>6.0f} {report.seconds:>6.0f} "
            f"{report.cpu_seconds:>6.0f}  {dropped}"
        )
    wall = time.monotonic() - started
    _summary(reports, wall, args.workers)
    _check_lines(store, backend)


def _summary(reports: list[ImageReport], wall: float, workers: int) -> None:
    kept = sum(r.kept for r in reports)
    dropped: Counter[str] = sum((r.dropped for r in reports), Counter())
    frames = [n for r in reports for n in r.frames]
    traced = kept + sum(n for reason, n in dropped.items() if reason not in NOT_TRACED)
    cores = min(workers, os.cpu_count() or 1)
    per_hour = kept / wall * 3600 if wall else 0.0
    print()
    load = os.getloadavg()[1]
    print(f"images {len(reports)}, wall {wall:.0f} s (coverage included), {cores} cores, load {load:.1f}")
    print(f"kept traces {kept}: {per_hour:,.0f} per hour (target 10,000), {per_hour / cores:,.0f} per core")
    cpu = sum(r.cpu_seconds for r in reports)
    if cpu:
        # What the machine would give if the tracing had it to itself: the environments' CPU only (the
        # host's storing and the containers' starts are left out), so an upper bound under load.
        print(
            f"CPU in the environments {cpu:.0f} s: {kept / cpu * 3600:,.0f} kept traces per CPU-hour, "
            f"{kept / cpu * 3600 * cores:,.0f} per hour on {cores} cores"
        )
    if traced:
        share = 100 * kept / traced
        print(
            f"deterministic within budget: {kept}/{traced} = {share:.1f}% of traced entry points (target 95%)"
        )
    total = kept + sum(dropped.values())
    for reason, n in dropped.most_common():
        print(f"  dropped {reason}: {n} ({100 * n / total:.1f}% of entry points)")
    if frames:
        print(f"frames per kept trace: median {statistics.median(frames):.0f}, max {max(frames)}")
        stored = sum(r.stored_bytes for r in reports)
        print(f"bytes stored per frame: {stored / sum(frames):.1f}")


def _check_lines(store: Store, backend: DockerBackend) -> None:
    """Every frame's source line against the image's file, read in one environment per image."""
    checked = mismatched = 0
    for image in store.list_images(status=ImageStatus.READY):
        traces = list(store.iter_traces(TraceFilter(image_id=image.id)))
        if not traces:
            continue
        files: dict[str, list[str]] = {}
        with backend.start(image.tag, episode=f"trace-check-{image.id}") as env:
            for trace in traces:
                for frame in resolved_frames(trace.data or {"frames": []}):
                    if frame["path"] not in files:
                        files[frame["path"]] = env.read_file(frame["path"]).decode("utf-8").splitlines()
                    checked += 1
                    lines = files[frame["path"]]
                    if frame["line"] > len(lines) or lines[frame["line"] - 1] != frame["source"]:
                        mismatched += 1
    print(f"frames checked against the images' files: {checked}, mismatched: {mismatched}")


if __name__ == "__main__":
    main()
