"""Leaks a killed worker can leave, and what ends them: the owner check, gc, and the lifetime bound."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import envs.backend
from envs.backend import EPISODE_LABEL, make_backend
from images.base import BASE_IMAGE
from images.engine import OWNER_LABEL, Owner, owner_state

ROOT = Path(__file__).parents[1]


def _labels_of_child(script: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """A Python child that prints its owner labels, then runs ``script``."""
    code = (
        "import json; from images.engine import owner_labels\n"
        "print(json.dumps(owner_labels()), flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code + script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    return child, json.loads(child.stdout.readline())


def test_a_killed_owner_not_yet_reaped_counts_as_exited() -> None:
    child, labels = _labels_of_child("import time; time.sleep(60)")
    try:
        assert owner_state(labels) is Owner.ALIVE
        child.send_signal(signal.SIGKILL)
        # Not waited for: the child is a zombie, whose /proc/PID/stat still holds its start time.
        for _ in range(50):
            state = Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0]
            if state == "Z":
                break
            time.sleep(0.05)
        assert state == "Z", "the drill needs a zombie"
        assert owner_state(labels) is Owner.EXITED
    finally:
        child.kill()
        child.wait()
    assert owner_state(labels) is Owner.EXITED


@pytest.mark.docker
def test_an_orphaned_container_ends_itself_after_its_lifetime(docker_client, monkeypatch) -> None:
    monkeypatch.setattr(envs.backend, "LIFETIME_MARGIN", 0)
    backend = make_backend("docker", client=docker_client)
    runtime = backend.start(BASE_IMAGE, workdir="/", lifetime=2, episode="lifetime-drill")
    try:
        container = docker_client.containers.get(runtime.container.id)
        assert container.attrs["Config"]["Cmd"] == ["sleep", "2"]
        deadline = time.monotonic() + 30
        while container.status != "exited" and time.monotonic() < deadline:
            time.sleep(0.5)
            container.reload()
        assert container.status == "exited", "the container outlived its lifetime"
    finally:
        runtime.close()


@pytest.mark.docker
def test_sigkill_mid_work_then_gc_at_once_leaves_zero_containers(docker_client, tmp_path: Path) -> None:
    """The drill of issue 10: a worker starting environments on several threads is SIGKILLed; `forager
    envs gc` run at once (its parent has not reaped it yet) removes every container it made, including
    those whose create was still in flight at the kill."""
    prefix = f"sigkill-drill-{time.monotonic_ns()}"
    script = textwrap.dedent(
        f"""
        import itertools, threading
        from envs.backend import make_backend
        backend = make_backend("docker")
        counter = itertools.count()
        def churn():
            while True:
                env = backend.start({BASE_IMAGE!r}, workdir="/", episode=f"{prefix}-{{next(counter)}}")
                env.run("true")
        for _ in range(4):
            threading.Thread(target=churn, daemon=True).start()
        import time
        while next(counter) < 6:
            time.sleep(0.1)
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    child, owner = _labels_of_child(script)

    def ours() -> list:
        listed = {"all": True, "filters": {"label": EPISODE_LABEL}, "ignore_removed": True}
        episodes = docker_client.containers.list(**listed)
        return [c for c in episodes if (c.labels or {}).get(EPISODE_LABEL, "").startswith(prefix)]

    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGKILL)
        # Narrowed to the child's: other tests leak containers of exited owners on purpose.
        gc = ["envs", "gc", "--json", "--label", f"{OWNER_LABEL}={owner[OWNER_LABEL]}"]
        done = subprocess.run(
            [sys.executable, "-m", "forager", "--home", str(tmp_path), *gc],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert not ours(), "gc right after the kill left containers"
    finally:
        child.kill()
        child.wait()
        for container in ours():
            container.remove(force=True)
