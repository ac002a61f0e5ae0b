"""The Kubernetes backend against the test API server (``tests/k8s_server.py``), pods being real containers.

The drills both backends share are in ``tests/test_runtime.py``; these are the Kubernetes-only ones: the
pod's spec, configuration errors, dropped and hung websockets, deleted pods, deadlines, threads, gc.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client, config

from core.errors import ForagerError
from envs.backend import CAPABILITIES, EPISODE_LABEL, BackendError, Limits, lifetime_seconds, make_backend
from envs.kubernetes_backend import OWNER_HOST_LABEL, KubernetesBackend
from envs.runtime import EnvironmentDied
from images.base import BASE_IMAGE
from images.engine import OWNER_LABEL
from tests.k8s_server import POD_LABEL, K8sTestServer

pytestmark = pytest.mark.docker


@pytest.fixture
def backend(kubernetes):
    made = make_backend("kubernetes", kubeconfig=str(kubernetes.kubeconfig_path))
    yield made
    made.close()


@pytest.fixture
def api(kubernetes):
    """A client of the test's own, to look at pods the way kubectl would."""
    raw = config.new_client_from_config(str(kubernetes.kubeconfig_path))
    yield client.CoreV1Api(raw)
    raw.close()


def containers_of(docker_client, namespace: str, pod: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{POD_LABEL}={namespace}/{pod}"})


def pod_names(api, episode: str) -> list[str]:
    found = api.list_namespaced_pod("forager-test", label_selector=f"{EPISODE_LABEL}={episode}")
    return [pod.metadata.name for pod in found.items]


def test_a_missing_configuration_says_where_to_look(monkeypatch, tmp_path: Path) -> None:
    for variable in ("KUBECONFIG", "FORAGER_K8S_KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(BackendError, match=r"no Kubernetes configuration.*KUBECONFIG"):
        KubernetesBackend(kubeconfig=str(tmp_path / "missing"))


def test_a_refusing_or_dead_api_server_is_one_clear_error(kubernetes, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text(kubernetes.kubeconfig_path.read_text().replace(kubernetes.token, "not-the-token"))
    refused = r"refused to list pods in namespace 'forager-test' \(401 Unauthorized.*credentials"
    with pytest.raises(BackendError, match=refused):
        KubernetesBackend(kubeconfig=str(wrong))
    dead = tmp_path / "dead"
    dead.write_text(kubernetes.kubeconfig_path.read_text().replace(kubernetes.url, "http://127.0.0.1:9"))
    with pytest.raises(BackendError, match=r"http://127\.0\.0\.1:9 does not answer"):
        KubernetesBackend(kubeconfig=str(dead), request_timeout=2)


def test_bad_options_from_the_environment_are_named(kubernetes, monkeypatch) -> None:
    monkeypatch.setenv("FORAGER_K8S_NODE_SELECTOR", "pool")
    with pytest.raises(BackendError, match="FORAGER_K8S_NODE_SELECTOR must be key=value"):
        KubernetesBackend(kubeconfig=str(kubernetes.kubeconfig_path))


def test_the_pod_is_locked_down_labelled_and_deleted(kubernetes, api, docker_client, monkeypatch) -> None:
    monkeypatch.setenv("FORAGER_K8S_NODE_SELECTOR", "pool=episodes")
    monkeypatch.setenv("FORAGER_K8S_IMAGE_PULL_SECRETS", "registry-a, registry-b")
    monkeypatch.setenv("FORAGER_K8S_TOLERATIONS", '[{"key": "episodes", "operator": "Exists"}]')
    backend = KubernetesBackend(kubeconfig=str(kubernetes.kubeconfig_path))
    episode = "task 7: attempt/2 of a very long episode name that no label value can hold whole"
    with backend.start(
        BASE_IMAGE, episode=episode, limits=Limits(memory="512m", cpus=0.5), lifetime=60
    ) as env:
        pod = api.read_namespaced_pod(env.pod, "forager-test")
        spec, container = pod.spec, pod.spec.containers[0]
        assert backend.namespace == "forager-test"  # from the kubeconfig's context
        assert spec.restart_policy == "Never" and spec.termination_grace_period_seconds == 0
        assert spec.active_deadline_seconds == lifetime_seconds(60)
        assert spec.automount_service_account_token is False and spec.enable_service_links is False
        assert spec.node_selector == {"pool": "episodes"}
        assert [secret.name for secret in spec.image_pull_secrets] == ["registry-a", "registry-b"]
        assert spec.tolerations[0].key == "episodes"
        assert (
            container.resources.limits == container.resources.requests == {"cpu": "500m", "memory": "512Mi"}
        )
        security = container.security_context
        assert (
            security.allow_privilege_escalation is False and security.seccomp_profile.type == "RuntimeDefault"
        )
        assert security.capabilities.drop == ["ALL"] and security.capabilities.add == CAPABILITIES
        label = pod.metadata.labels[EPISODE_LABEL]
        assert len(label) <= 63 and label.startswith("task-7--attempt-2")
        assert pod.metadata.annotations[EPISODE_LABEL] == episode
        assert pod.metadata.annotations[OWNER_LABEL].split(":")[1] == str(os.getpid())
        assert OWNER_HOST_LABEL in pod.metadata.labels

        # What the spec asked for holds inside (the test server applies it as a kubelet would).
        assert "NoNewPrivs:\t1" in env.run("cat /proc/self/status").output
        assert env.run("ls /sys/class/net").output.split() == ["lo"]
        name = env.pod
    assert not pod_names(api, label)
    assert not containers_of(docker_client, "forager-test", name)
    env.close()  # a second close is harmless
    backend.close()


def test_a_missing_image_names_the_pull_error_and_leaves_no_pod(backend, api) -> None:
    with pytest.raises(ForagerError, match=r"cannot pull image forager/no-such-image:x.*forager images push"):
        backend.start("forager/no-such-image:x", episode="no-image")
    assert not pod_names(api, "no-image")


def test_a_websocket_dropped_while_idle_comes_back_in_the_same_place(backend, kubernetes) -> None:
    with backend.start(BASE_IMAGE, workdir="/") as env:
        env.run("cd /etc && export KEPT='still here'")
        assert kubernetes.drop_exec_streams() == 1
        time.sleep(0.5)
        observation = env.run('pwd; echo "$KEPT"; cd /')
        assert observation.output == "/etc\nstill here\n" and observation.exit_code == 0
        assert "connection to the shell was lost; a new shell was started in /etc" in observation.note
        assert env.run("echo again").note == ""


def test_a_websocket_dropped_mid_command_kills_the_command(backend, kubernetes) -> None:
    with backend.start(BASE_IMAGE, workdir="/") as env:
        env.run("cd /tmp")
        threading.Timer(1.0, kubernetes.drop_exec_streams).start()
        started = time.monotonic()
        observation = env.run("sleep 300; echo finished", timeout=60)
        assert time.monotonic() - started < 10
        assert observation.exit_code is None and "connection to the shell was lost" in observation.note
        assert "new shell was started in /tmp" in observation.note
        assert "sleep 300" not in env.run("ps -eo args").output, "the old shell's command was killed"
        assert env.run("pwd").output == "/tmp\n"


def test_a_hung_exec_is_bounded_by_the_request_timeout(kubernetes) -> None:
    backend = KubernetesBackend(kubeconfig=str(kubernetes.kubeconfig_path), request_timeout=2)
    try:
        with backend.start(BASE_IMAGE, workdir="/") as env:
            kubernetes.exec_delay = 30.0
            try:
                kubernetes.drop_exec_streams()
                time.sleep(0.3)
                started = time.monotonic()
                with pytest.raises(EnvironmentDied, match="not answered within 2 s"):
                    env.run("true")
                assert time.monotonic() - started < 10
            finally:
                kubernetes.exec_delay = 0.0
    finally:
        backend.close()


def test_a_pod_deleted_mid_command_is_a_clear_infrastructure_error(backend, docker_client) -> None:
    env = backend.start(BASE_IMAGE, workdir="/")
    deleter = threading.Timer(1.0, backend.delete_pod, [env.pod])  # another thread, the same backend
    deleter.start()
    with pytest.raises(EnvironmentDied, match=r"is gone|is being deleted"):
        env.run("sleep 30", timeout=20)
    env.close()
    deleter.join()
    assert not containers_of(docker_client, backend.namespace, env.pod)


def test_the_active_deadline_ends_the_pod(backend, monkeypatch) -> None:
    monkeypatch.setattr("envs.backend.LIFETIME_MARGIN", 0.0)
    with backend.start(BASE_IMAGE, workdir="/", lifetime=3) as env:
        assert env.run("echo alive").output == "alive\n"
        time.sleep(4)
        with pytest.raises(EnvironmentDied, match="DeadlineExceeded"):
            env.run("echo late", timeout=10)


def test_throttling_and_server_errors_are_retried(backend, kubernetes, api) -> None:
    kubernetes.fail_next = [429, 500, 503]  # the create
    with backend.start(BASE_IMAGE, episode="retried", workdir="/") as env:
        assert env.run("echo up").output == "up\n"
        kubernetes.fail_next = [500, 429]  # the delete
    assert not kubernetes.fail_next and not pod_names(api, "retried")
    kubernetes.fail_next = [500] * 10
    try:
        with pytest.raises(EnvironmentDied, match=r"could not create a pod.*500"):
            backend.start(BASE_IMAGE, episode="never")
    finally:
        kubernetes.fail_next = []


def test_many_threads_share_one_backend(backend, api) -> None:
    def episode(number: int) -> list[str]:
        with backend.start(BASE_IMAGE, episode=f"threads-{number}", workdir="/") as env:
            return [env.run(f"echo {number}-{step}").output for step in range(30)]

    with ThreadPoolExecutor(6) as pool:
        outputs = list(pool.map(episode, range(6)))
    assert outputs == [[f"{number}-{step}\n" for step in range(30)] for number in range(6)]
    assert not any(pod_names(api, f"threads-{number}") for number in range(6))


def test_sigterm_mid_command_deletes_the_pod(kubernetes, api, docker_client) -> None:
    # The CLI handles SIGTERM like Ctrl-C (as default_int_handler does here): the with block closes.
    script = textwrap.dedent(
        f"""
        import signal
        from envs.kubernetes_backend import KubernetesBackend
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with KubernetesBackend(kubeconfig={str(kubernetes.kubeconfig_path)!r}).start(
            {BASE_IMAGE!r}, episode="terminated-worker", workdir="/"
        ) as env:
            print(env.pod, flush=True)
            env.run("sleep 60", timeout=120)
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], cwd=Path(__file__).parents[1], stdout=subprocess.PIPE, text=True
    )
    pod = worker.stdout.readline().strip()
    assert pod_names(api, "terminated-worker") == [pod]
    time.sleep(0.5)
    worker.terminate()
    worker.wait(30)
    assert not pod_names(api, "terminated-worker")
    assert not containers_of(docker_client, "forager-test", pod)


def test_gc_deletes_the_pods_of_a_killed_process_only(backend, kubernetes, api, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from envs.kubernetes_backend import KubernetesBackend
        env = KubernetesBackend(kubeconfig={str(kubernetes.kubeconfig_path)!r}).start(
            {BASE_IMAGE!r}, episode="crashed-worker", workdir="/")
        env.run("echo started")
        os.kill(os.getpid(), 9)
        """
    )
    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-c", script], cwd=root, timeout=120)
    assert pod_names(api, "crashed-worker"), "the drill needs a leaked pod to collect"
    with backend.start(BASE_IMAGE, episode="live-worker", workdir="/") as live:

        def gc(*options: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "forager", "--home", str(tmp_path), "envs", "gc", "--backend",
                 "kubernetes", *options],
                capture_output=True,
                text=True,
                cwd=root,
                env={**os.environ, "KUBECONFIG": str(kubernetes.kubeconfig_path)},
            )  # fmt: skip

        narrowed = gc("--label", f"{EPISODE_LABEL}=live-worker")
        assert narrowed.returncode == 0, narrowed.stderr
        assert pod_names(api, "crashed-worker"), "--label leaves the pods without that label"
        done = gc()
        assert done.returncode == 0, done.stderr
        assert not pod_names(api, "crashed-worker")
        assert pod_names(api, "live-worker") == [live.pod], "a live process's pod stays"
        assert live.run("echo ok").output == "ok\n"


def test_over_tls_with_a_verified_certificate(docker_client, tmp_path: Path) -> None:
    """Real clusters speak TLS: decrypted frames can wait in the TLS layer, unseen by polling the socket."""
    server = K8sTestServer(docker_client, tls_dir=tmp_path).start()
    try:
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig", namespace="forager-tls")
        backend = KubernetesBackend(kubeconfig=str(kubeconfig))
        assert backend.configuration.host.startswith("https://") and backend.configuration.verify_ssl
        with backend.start(BASE_IMAGE, workdir="/", limits=Limits(output_bytes=8000)) as env:
            assert [env.run(f"echo {n}").output for n in range(200)] == [f"{n}\n" for n in range(200)]
            flood = env.run("seq 1 300000", timeout=20)
            assert flood.exit_code == 0 and flood.output.endswith("299999\n300000\n") and flood.elided
            env.write_file("blob.bin", bytes(range(256)) * 1000)
            assert env.read_file("blob.bin") == bytes(range(256)) * 1000
            server.drop_exec_streams()
            time.sleep(0.3)
            assert "connection to the shell was lost" in env.run("true").note
        backend.close()
    finally:
        server.stop()
