"""Fault drills and behaviour of the runtimes of both backends, against the real engine.

Every drill on ``env`` runs twice: on the Docker backend, and on the Kubernetes backend through the test
API server (``tests/k8s_server.py``: the official client and its exec websocket, pods that are real
containers). Docker-only and Kubernetes-only behaviour is tested in ``tests/test_kubernetes.py`` and
below.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ForagerError
from envs.backend import EPISODE_LABEL, Backend
from envs.docker_backend import DockerBackend
from envs.docker_runtime import DockerRuntime, Limits
from envs.kubernetes_backend import KubernetesBackend
from envs.kubernetes_runtime import KubernetesRuntime
from envs.mutate import unified_diff
from envs.runtime import EnvironmentDied
from envs.tasks import prepare
from images.base import BASE_IMAGE
from images.build_container import tar_directory
from tests.k8s_server import POD_LABEL
from tests.repos import CALC, make_repo, python_project
from tools.calls import parse_cwm, parse_openai
from tools.execute import execute

pytestmark = pytest.mark.docker
#: Of this test process alone: xdist workers and other test runs share the engine (and remove theirs).
IMAGE = f"forager-test/runtime:{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def repo_image(docker_client, tmp_path_factory):
    """The base image with a small git repository at /repo, as repository images have."""
    root = tmp_path_factory.mktemp("runtime") / "repo"
    make_repo(root, python_project())
    container = docker_client.containers.run(
        BASE_IMAGE, ["sleep", "infinity"], detach=True, network_mode="none"
    )
    try:
        container.put_archive("/", tar_directory(root, "repo"))
        container.commit(*IMAGE.split(":"), conf={"WorkingDir": "/repo"})
    finally:
        container.remove(force=True)
    yield IMAGE
    docker_client.images.remove(IMAGE, force=True)


@pytest.fixture(params=["docker", "kubernetes"])
def backend(request, docker_client) -> Iterator[Backend]:
    if request.param == "docker":
        yield DockerBackend(docker_client)
        return
    server = request.getfixturevalue("kubernetes")
    made = KubernetesBackend(kubeconfig=str(server.kubeconfig_path))
    yield made
    made.close()


@pytest.fixture
def env(backend, repo_image):
    runtime = backend.start(repo_image, limits=Limits(pids=256, output_bytes=8000))
    yield runtime
    runtime.close()


def backing_container(env, docker_client, request):
    """The Docker container an environment runs in (a pod's, under the test API server)."""
    if isinstance(env, KubernetesRuntime):
        server = request.getfixturevalue("kubernetes")
        return docker_client.containers.get(server.container_of(env.backend.namespace, env.pod))
    return docker_client.containers.get(env.container.id)


def environment_exists(env, docker_client, request) -> bool:
    """Whether anything of the environment is left: its container, and its pod."""
    if isinstance(env, KubernetesRuntime):
        server = request.getfixturevalue("kubernetes")
        key = f"{env.backend.namespace}/{env.pod}"
        containers = docker_client.containers.list(all=True, filters={"label": f"{POD_LABEL}={key}"})
        return bool(containers) or (env.backend.namespace, env.pod) in server.pods
    return bool(docker_client.containers.list(all=True, filters={"id": env.container.id}))


def test_a_missing_image_is_named_and_never_pulled(docker_client) -> None:
    with pytest.raises(ForagerError, match="image forager/no-such-image:x does not exist: build it"):
        DockerRuntime.start(docker_client, "forager/no-such-image:x")


def test_shell_state_persists_and_stdin_is_closed(env) -> None:
    assert env.run("pwd").output == "/repo\n"
    # The shell adds nothing to the image's environment but disabled pagers: tests must see what the
    # baseline saw (TERM=dumb once turned termcolor's colours off in episodes only).
    assert env.run("sh -c 'echo ${TERM-unset} $PAGER'").output == "unset cat\n"
    env.run("cd src && export GREETING='hello world' && plain=1")
    observation = env.run('pwd; echo "$GREETING $plain"')
    assert observation.output == "/repo/src\nhello world 1\n" and observation.exit_code == 0
    assert env.run("exit_with() { return $1; }; exit_with 7").exit_code == 7

    started = time.monotonic()
    for interactive in ("python3 -c 'input()'", "read line", "cat"):
        assert env.run(interactive, timeout=10).timed_out is False
    assert time.monotonic() - started < 5, "interactive programs must fail fast, not wait for input"


def test_output_without_trailing_newline_and_undecodable_bytes(env) -> None:
    assert env.run("printf 'no newline'").output == "no newline"
    assert env.run("printf 'caf\\xc3\\xa9 \\xff\\xfe'").output == "café \\xff\\xfe"
    assert env.run("echo out; echo err >&2").output == "out\nerr\n"


def test_sleep_is_killed_on_timeout_and_the_shell_survives(env) -> None:
    env.run("cd /tmp && export KEPT=yes")
    started = time.monotonic()
    observation = env.run("sleep 1000", timeout=2)
    assert observation.timed_out and observation.exit_code is None
    assert time.monotonic() - started < 2 + 5
    assert env.run("echo $KEPT; pwd").output == "yes\n/tmp\n"
    assert "sleep 1000" not in env.run("ps -eo args").output


def test_a_stuck_shell_is_replaced_in_the_same_place(env) -> None:
    env.run("cd /etc && export KEPT=still")
    started = time.monotonic()
    observation = env.run("while true; do :; done", timeout=2)
    assert observation.timed_out and "restarted in /etc" in observation.note
    assert time.monotonic() - started < 2 + 5
    assert env.run("echo $KEPT; pwd").output == "still\n/etc\n"


def test_exit_starts_a_new_shell(env) -> None:
    env.run("cd src; export KEPT=1")
    observation = env.run("exit 3")
    assert "new shell" in observation.note
    assert env.run("echo $KEPT; pwd").output == "1\n/repo/src\n"


@pytest.mark.parametrize("command", ["yes", "head -c 50M /dev/urandom", "seq 1 3000000"])
def test_huge_output_is_capped_with_bounded_memory(env, command: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    observation = env.run(command, timeout=5)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert len(observation.output.encode()) < 8000 * 4 + 200  # escaped bytes take up to 4 characters
    assert observation.elided > 1_000_000 and "bytes elided" in observation.output
    assert grown_kib < 64 * 1024, f"host memory grew by {grown_kib} KiB"
    assert env.run("echo ok").output == "ok\n"


def test_a_flood_that_times_out_is_capped_once(env) -> None:
    # The output read after the kill continues the same capped buffer: no second cap's worth.
    observation = env.run("yes", timeout=1)
    assert observation.timed_out and observation.elided > 0
    assert len(observation.output.encode()) < 8000 + 200


def test_a_background_flood_between_commands_leaves_the_shell_usable(env) -> None:
    assert env.run("yes &").exit_code == 0
    flooded = env.run("echo ok", timeout=30)
    assert flooded.exit_code == 0 and not flooded.timed_out
    assert len(flooded.output.encode()) < 8000 + 200, "output between commands is capped too"
    assert env.run("pkill yes", timeout=10).exit_code == 0
    assert env.run("echo fine").output == "fine\n"


def test_fork_bomb_is_contained_by_the_pids_limit(env, docker_client, request) -> None:
    env.run(":(){ :|:& };:", timeout=5)
    time.sleep(1)
    container = backing_container(env, docker_client, request)
    assert int(container.stats(stream=False)["pids_stats"]["current"]) <= 256
    assert "ok" in env.run("echo ok", timeout=10).output, "the shell still answers"


def test_killed_container_is_a_clear_infrastructure_error(env, docker_client, request) -> None:
    container = backing_container(env, docker_client, request)
    threading.Timer(1.0, container.kill).start()
    with pytest.raises(EnvironmentDied, match=r"stopped|gone"):
        env.run("sleep 30", timeout=20)


def test_thousand_commands_leak_no_descriptors_or_threads(env) -> None:
    env.run("true")
    descriptors, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for number in range(1000):
        assert env.run(f"echo {number}").output == f"{number}\n"
    assert len(os.listdir("/proc/self/fd")) <= descriptors
    assert threading.active_count() <= threads


def test_container_is_locked_down_labelled_and_removed(docker_client, repo_image) -> None:
    with DockerRuntime.start(docker_client, repo_image, episode="drill-1") as env:
        attrs = docker_client.containers.get(env.container.id).attrs
        assert attrs["Config"]["Labels"][EPISODE_LABEL] == "drill-1"
        assert "forager.created" in attrs["Config"]["Labels"]
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        assert attrs["HostConfig"]["PidsLimit"] == 512 and attrs["HostConfig"]["Memory"] > 0
        assert env.run("ls /sys/class/net").output.split() == ["lo"]
        assert "NoNewPrivs:\t1" in env.run("cat /proc/self/status").output
        container_id = env.container.id
    assert not docker_client.containers.list(all=True, filters={"id": container_id})
    env.close()  # a second close is harmless


def test_an_exception_inside_with_still_removes_the_container(backend, docker_client, repo_image, request):
    with pytest.raises(RuntimeError), backend.start(repo_image) as env:
        assert environment_exists(env, docker_client, request)
        raise RuntimeError("the agent crashed")
    assert not environment_exists(env, docker_client, request)


def test_killed_host_process_leaves_only_what_gc_removes(docker_client, repo_image, tmp_path: Path) -> None:
    episode = f"crashed-worker-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(
        f"""
        import os, docker
        from envs.docker_runtime import DockerRuntime
        env = DockerRuntime.start(docker.from_env(), {repo_image!r}, episode={episode!r})
        env.run("echo started")
        os.kill(os.getpid(), 9)
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], timeout=60)
    leaked = docker_client.containers.list(all=True, filters={"label": f"{EPISODE_LABEL}={episode}"})
    assert leaked, "the drill needs a leaked container to collect"
    mine = f"{EPISODE_LABEL}={episode}"  # other tests leak containers of exited owners on purpose
    done = subprocess.run(
        [sys.executable, "-m", "forager", "--home", str(tmp_path), "envs", "gc", "--label", mine],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not docker_client.containers.list(all=True, filters={"label": f"{EPISODE_LABEL}={episode}"})


def test_rewriting_a_file_keeps_its_mode_and_a_new_file_is_not_executable(env) -> None:
    env.run("printf '#!/bin/sh\\necho old\\n' > run.sh && chmod 755 run.sh")
    env.write_file("run.sh", b"#!/bin/sh\necho new\n")
    assert env.run("./run.sh").output == "new\n"
    env.write_file("fresh.sh", b"#!/bin/sh\n")
    assert env.run("stat -c %a run.sh fresh.sh").output == "755\n644\n"


def test_files_binary_spaces_dotdot_and_diff(env) -> None:
    env.write_file("docs/a file with spaces.txt", b"spaced\n")
    env.write_file("src/../blob.bin", bytes(range(256)))
    assert env.read_file("/repo/docs/a file with spaces.txt") == b"spaced\n"
    assert env.read_file("blob.bin") == bytes(range(256))
    assert env.exists("docs") and not env.exists("nothing/here")
    with pytest.raises(IsADirectoryError):
        env.read_file("docs")
    with pytest.raises(FileNotFoundError):
        env.read_file("missing.txt")

    env.run("echo '# changed' >> src/calc/__init__.py")
    status_before = env.run("git status --porcelain").output
    patch = env.diff()
    assert "diff --git a/src/calc/__init__.py" in patch and "+# changed" in patch
    assert "docs/a file with spaces.txt" in patch and "GIT binary patch" in patch
    assert env.run("git status --porcelain").output == status_before, "diff must not touch the agent's index"
    env.run("cd /tmp")
    assert env.diff() == patch, "diff works from any directory"


def test_the_four_tools_in_a_real_environment(env) -> None:
    """Each tool through both formats' parsers, executed in the container; submit ends with the diff."""
    refused = execute(parse_cwm("Nothing changed yet.\n<tool: submit>\n</tool>"), env)
    assert not refused.ok and not refused.submitted

    listing = execute(parse_cwm("<tool: bash>\nls src/calc && false\n</tool>"), env)
    assert listing.output.startswith("__init__.py\n") and "[exit code 1]" in listing.output

    created = execute(
        parse_cwm("<tool: create>\nsrc/calc/mul.py\ndef mul(a, b):\n    return a * b\n</tool>"), env
    )
    assert created.ok and env.read_file("src/calc/mul.py") == b"def mul(a, b):\n    return a * b\n"

    arguments = json.dumps(
        {"path": "src/calc/__init__.py", "old_str": "return a - b", "new_str": "return b - a"}
    )
    call = parse_openai(
        [{"id": "c1", "type": "function", "function": {"name": "edit", "arguments": arguments}}]
    )
    edited = execute(call, env)
    assert edited.ok and "return b - a" in edited.output
    assert not execute(call, env).ok, "the old text is gone: a second identical edit is refused"

    submitted = execute(parse_cwm("<tool: submit>\n</tool>"), env)
    assert submitted.submitted and submitted.patch is not None
    assert "+    return b - a" in submitted.patch and "src/calc/mul.py" in submitted.patch
    checked = env.run(f"git apply --check -R - <<'EOF'\n{submitted.patch}EOF")
    assert checked.exit_code == 0, checked.output


def test_diff_sees_a_same_size_edit_made_in_the_same_second_as_the_start(env) -> None:
    # git trusts stat data to whole seconds: a same-size change made right after a task's start commit
    # must still count, however much later the diff is taken.
    setup = unified_diff("src/calc/__init__.py", CALC, CALC.replace("return a - b", "return a + b"))
    time.sleep(1 - time.time() % 1)  # start of a second: the start commit and the edit share it
    prepare(env, "mutate_fix", setup)
    env.write_file("src/calc/__init__.py", CALC.encode())
    time.sleep(1.2)
    assert "+    return a - b" in env.diff()
