"""Runtime benchmark: tool round trips against plain ``docker exec``, start-up, many environments at once.

    python bench/runtime.py [--image forager/base:bookworm] [--calls 300] [--starts 20] [--alive 32]

Prints p50/p90 of ``true`` through the tool API (``execute(bash)`` on the persistent shell) and through
a fresh ``docker exec`` per command, their ratio, the p50 from image to ready shell, and the command
throughput of ``--alive`` environments used at once. Targets (issue #4): ratio >= 40x with p50 <= 2 ms;
start p50 <= 0.5 s; 32 environments alive at once on a 2-core machine; no container left at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from envs.backend import EPISODE_LABEL
from envs.docker_runtime import DockerRuntime
from images.base import BASE_IMAGE
from images.engine import connect
from tools.calls import ToolCall
from tools.execute import execute


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default=BASE_IMAGE)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--alive", type=int, default=32)
    args = parser.parse_args()
    client = connect()
    true = ToolCall("bash", {"command": "true"})

    with DockerRuntime.start(client, args.image, workdir="/") as env:
        execute(true, env)
        tool = _times(lambda: execute(true, env), args.calls)
        plain = _times(lambda: env.container.exec_run(["true"]), max(20, args.calls // 5))
    print(f"tool API `true`:      p50 {_ms(tool, 50)} ms, p90 {_ms(tool, 90)} ms ({len(tool)} calls)")
    print(f"docker exec `true`:   p50 {_ms(plain, 50)} ms, p90 {_ms(plain, 90)} ms ({len(plain)} calls)")
    print(f"ratio (p50):          {statistics.median(plain) / statistics.median(tool):.0f}x")

    starts = []
    for _ in range(args.starts):
        started = time.perf_counter()
        env = DockerRuntime.start(client, args.image, workdir="/")
        starts.append(time.perf_counter() - started)
        env.close()
    print(f"start to ready shell: p50 {_ms(starts, 50)} ms, p90 {_ms(starts, 90)} ms ({len(starts)} starts)")

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        envs = list(
            pool.map(lambda _: DockerRuntime.start(client, args.image, workdir="/"), range(args.alive))
        )
    start_all = time.perf_counter() - started
    try:
        per_env = 50
        started = time.perf_counter()
        with ThreadPoolExecutor(args.alive) as pool:
            list(pool.map(lambda env: [execute(true, env) for _ in range(per_env)], envs))
        elapsed = time.perf_counter() - started
        print(
            f"{args.alive} environments alive: started in {start_all:.1f} s, "
            f"{args.alive * per_env / elapsed:.0f} tool calls/s across them"
        )
    finally:
        for env in envs:
            env.close()
    left = client.containers.list(all=True, filters={"label": EPISODE_LABEL})
    print(f"containers left:      {len(left)}")


def _times(call, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return sorted(times)


def _ms(values: list[float], percentile: int) -> str:
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, round(percentile / 100 * (len(ordered) - 1)))]:.2f}"


if __name__ == "__main__":
    main()
