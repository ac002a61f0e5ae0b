"""Runtime benchmark: tool round trips against a fresh exec per command, start-up, many environments at once.

    python -m bench.runtime [--backend docker|kubernetes] [--kubeconfig PATH]
                            [--image forager/base:bookworm] [--calls 300] [--starts 20] [--alive 32]

Prints p50/p90 of ``true`` through the tool API (``execute(bash)`` on the persistent shell) and through
a fresh exec per command (``docker exec``; a new exec websocket on Kubernetes), their ratio, the p50
from image to ready shell, and the command throughput of ``--alive`` environments used at once.
Targets (issue #4, Docker): ratio >= 40x with p50 <= 2 ms; start p50 <= 0.5 s; 32 environments alive
at once on a 2-core machine; no environment left at the end.

``--backend kubernetes`` without ``--kubeconfig`` measures through the test API server of
``tests/k8s_server.py`` (the official client and its exec websocket to pods that are local
containers), started in this process: it shares the process's CPU with the client, so its figures
bound a real cluster's API path from above, without a kubelet's or a network's latency.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from envs.backend import EPISODE_LABEL, Backend
from envs.docker_backend import DockerBackend
from envs.kubernetes_backend import KubernetesBackend
from images.base import BASE_IMAGE
from images.engine import connect
from tools.calls import ToolCall
from tools.execute import execute


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["docker", "kubernetes"], default="docker")
    parser.add_argument("--kubeconfig", help="a cluster's kubeconfig (default: the test API server)")
    parser.add_argument("--image", default=BASE_IMAGE)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--alive", type=int, default=32)
    args = parser.parse_args()
    true = ToolCall("bash", {"command": "true"})

    with _backend(args.backend, args.kubeconfig) as backend:
        print(f"backend:              {args.backend}")
        with backend.start(args.image, workdir="/") as env:
            execute(true, env)
            tool = _times(lambda: execute(true, env), args.calls)
            plain = _times(_fresh_exec(backend, env), max(20, args.calls // 5))
        print(f"tool API `true`:      p50 {_ms(tool, 50)} ms, p90 {_ms(tool, 90)} ms ({len(tool)} calls)")
        print(f"fresh exec `true`:    p50 {_ms(plain, 50)} ms, p90 {_ms(plain, 90)} ms ({len(plain)} calls)")
        print(f"ratio (p50):          {statistics.median(plain) / statistics.median(tool):.0f}x")

        starts = []
        for _ in range(args.starts):
            started = time.perf_counter()
            env = backend.start(args.image, workdir="/")
            starts.append(time.perf_counter() - started)
            env.close()
        print(
            f"start to ready shell: p50 {_ms(starts, 50)} ms, p90 {_ms(starts, 90)} ms ({len(starts)} starts)"
        )

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            envs = list(pool.map(lambda _: backend.start(args.image, workdir="/"), range(args.alive)))
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
        print(f"environments left:    {_left(backend)}")


@contextlib.contextmanager
def _backend(kind: str, kubeconfig: str | None) -> Iterator[Backend]:
    if kind == "docker":
        backend: Backend = DockerBackend(connect())
        yield backend
        backend.close()
        return
    if kubeconfig:
        backend = KubernetesBackend(kubeconfig=kubeconfig)
        yield backend
        backend.close()
        return
    from tests.k8s_server import K8sTestServer  # needs the checkout on sys.path: run with -m

    server = K8sTestServer(connect()).start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            backend = KubernetesBackend(kubeconfig=str(server.kubeconfig(Path(folder) / "kubeconfig")))
            yield backend
            backend.close()
    finally:
        server.stop()


def _fresh_exec(backend: Backend, env: object) -> Callable[[], object]:
    """One command in a new exec of its own, as runtimes without a persistent shell run every command."""
    if isinstance(backend, KubernetesBackend):

        def websocket_exec() -> None:
            ws = backend.exec_stream(env.pod, ["true"], stdin=False)  # type: ignore[attr-defined]
            ws.run_forever(timeout=30)
            ws.close()

        return websocket_exec
    return lambda: env.container.exec_run(["true"])  # type: ignore[attr-defined]


def _left(backend: Backend) -> int:
    if isinstance(backend, KubernetesBackend):
        pods = backend.core.list_namespaced_pod(backend.namespace, label_selector=EPISODE_LABEL)
        return len(pods.items)
    return len(backend.client.containers.list(all=True, filters={"label": EPISODE_LABEL}))  # type: ignore[attr-defined]


def _times(call: Callable[[], object], count: int) -> list[float]:
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
