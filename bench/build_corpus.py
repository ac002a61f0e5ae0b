"""Image-builder benchmark: build the committed corpus and print success rate and costs.

    python bench/build_corpus.py [--corpus bench/corpus.txt] [--home .forager-bench] [--jobs 1]
                                 [--clear-cache] [--only NAME ...]

Cold builds run with ``rebuild`` (no image reused); ``--clear-cache`` also empties the shared package
cache volume first, for a truly cold start. Then every ready image is built again to time the warm
path (same source and recipe: skipped). Unique bytes are compared with what the image holds of its
own: the repository plus the installed environment (``du`` of /repo and /venv). Targets (issue #3):
>= 90% ready, median cold <= 60 s on a 2-core machine, warm <= 3 s, unique <= 1.2 x (repo + venv).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from docker.errors import NotFound

from images.builder import CACHE_VOLUME, BuildOptions, ImageBuilder
from images.engine import connect
from images.proxy import NetworkSettings
from images.sources import read_source_file
from storage import ImageStatus, Store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path(__file__).with_name("corpus.txt"))
    parser.add_argument("--home", type=Path, default=Path(".forager-bench"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--clear-cache", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="only these names (e.g. pypi__six)")
    args = parser.parse_args()

    specs = read_source_file(args.corpus)
    if args.only:
        specs = [spec for spec in specs if spec.name in args.only]
    client = connect(timeout=3600)
    if args.clear_cache:
        with contextlib.suppress(NotFound):
            client.volumes.get(CACHE_VOLUME).remove(force=True)
    store = Store(f"sqlite:///{(args.home / 'forager.db').resolve()}", upgrade=True)
    options = BuildOptions(network=NetworkSettings.from_environment(), rebuild=True)
    builder = ImageBuilder(client, store, args.home, options, progress=_print_progress)

    started = time.monotonic()
    cold = builder.build_many(specs, args.jobs)
    wall = time.monotonic() - started
    builder.options = replace(options, rebuild=False)
    ready = [r for r in cold if r.status == ImageStatus.READY]
    warm = [_timed(builder, spec) for spec in specs if spec.name in {r.name for r in ready}]
    ratios = {r.name: r.unique_bytes / _own_bytes(client, r.tag) for r in ready if r.unique_bytes and r.tag}

    print()
    print(f"{'repository':<24} {'status':<26} {'tests':>11} {'cold s':>7} {'unique MiB':>10} {'ratio':>6}")
    for r in cold:
        status = r.status.value + (f" ({r.failure_class})" if r.failure_class else "")
        ratio = f"{ratios[r.name]:.2f}" if r.name in ratios else "-"
        unique = f"{r.unique_bytes / 2**20:.0f}" if r.unique_bytes else "-"
        print(
            f"{r.name:<24} {status:<26} {r.tests_passed:>5}/{r.tests_total:<5} {r.seconds:>7.1f} "
            f"{unique:>10} {ratio:>6}"
        )
    failures = Counter(r.failure_class for r in cold if r.failure_class)
    cold_times = sorted(r.seconds for r in cold)
    print()
    print(f"images built:       {len(cold)} (jobs {args.jobs}, wall {wall:.0f} s)")
    print(f"ready:              {len(ready)}/{len(cold)} = {100 * len(ready) / len(cold):.0f}%")
    print(f"failure classes:    {dict(failures) or 'none'}")
    print(f"cold build median:  {statistics.median(cold_times):.1f} s, p95 {_p95(cold_times):.1f} s")
    if warm:
        print(f"warm rebuild:       median {statistics.median(warm):.2f} s, max {max(warm):.2f} s")
    if ratios:
        values = sorted(ratios.values())
        print(f"unique / own bytes: median {statistics.median(values):.2f}, max {max(values):.2f}")
        uniques = sorted(r.unique_bytes for r in ready if r.unique_bytes)
        print(f"unique bytes:       median {statistics.median(uniques) / 2**20:.0f} MiB")
    for r in cold:
        if r.status != ImageStatus.READY:
            print(f"  {r.name}: {r.failure_class}: {r.reason} (log {r.log_path})")
    store.close()
    sys.exit(0)


def _timed(builder: ImageBuilder, spec) -> float:
    started = time.monotonic()
    result = builder.build(spec)
    assert result.cached, f"{spec.text} was built again instead of reused"
    return time.monotonic() - started


def _own_bytes(client, tag: str) -> int:
    """Bytes of the repository and its environment inside the image (what a layer must at least hold)."""
    output = client.containers.run(tag, ["du", "-sb", "/repo", "/venv"], remove=True, network_mode="none")
    return sum(int(line.split()[0]) for line in output.decode().splitlines())


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def _print_progress(event) -> None:
    if event.stage in ("ready", "failed", "install", "tests"):
        print(f"[{time.strftime('%H:%M:%S')}] {event.subject}: {event.stage} {event.message}", flush=True)


if __name__ == "__main__":
    main()
