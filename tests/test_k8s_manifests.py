"""`forager k8s`: rendered manifests and the kustomize base against the official Kubernetes schemas,
apply/delete requests as the official client sends them, and `status` from a real store."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from envs.backend import EPISODE_LABEL
from forager.k8s import Cluster, ClusterError, ManifestError, ManifestOptions, render, write
from forager.k8s.cluster import object_path
from images.engine import owner_labels
from images.proxy import NetworkSettings
from images.self_image import WORKER_UID, build_self_image, find_checkout, self_dockerfile, self_dockerignore
from storage import Store
from tests.cli import forager
from tests.farm import build_fixture_tasks, private_database, serve_oracle
from tests.k8s_server import K8sTestServer
from tests.test_queue import episode_for, make_tasks

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "k8s" / "base"
OVERLAY = ROOT / "k8s" / "overlays" / "example"
#: The oldest Kubernetes minor still widely run that has every Job field used here GA (1.33:
#: backoffLimitPerIndex), and the newest the installed kubernetes-validate ships.
#: Where a pod's service account token, CA and namespace are mounted (read by in-cluster configuration).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
VERSIONS = ["1.33.0", kubernetes_validate.utils.latest_version()]
CUSTOM = ManifestOptions(
    namespace="team-a", workers=12, image="127.0.0.1:5000/forager/worker:abc", model="https://llm.internal/v1",
    model_name="coder", action_format="cwm_text", db_secret="forager-db", warm=2,
    image_pull_secrets=("regcred",),
)  # fmt: skip


def validate(obj: dict[str, Any], version: str) -> None:
    """Strict validation: unknown fields are errors too."""
    kubernetes_validate.validate(obj, version, strict=True)


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# -- the manifests --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("options", [ManifestOptions(), CUSTOM], ids=["defaults", "custom"])
def test_every_rendered_object_validates_against_the_official_schemas(
    options: ManifestOptions, version: str
) -> None:
    objects = render(options)
    assert [o["kind"] for o in objects] == [
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ConfigMap", "Job",
    ]  # fmt: skip
    for obj in objects:
        validate(obj, version)


def test_a_wrong_field_fails_the_validation_the_tests_rely_on() -> None:
    job = render()[-1]
    job["spec"]["completionMode"] = ["Indexed"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job, VERSIONS[-1])
    job = render()[-1]
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicie"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(job, VERSIONS[-1])


def test_the_job_is_an_indexed_job_of_workers_that_empty_the_queue() -> None:
    job = render(CUSTOM)[-1]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == 12
    assert spec["backoffLimitPerIndex"] == 3 and spec["ttlSecondsAfterFinished"] > 0
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "forager-worker"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    (container,) = pod["containers"]
    assert container["image"] == CUSTOM.image
    assert container["command"] == ["forager"]
    args = container["args"]
    assert args[:4] == ["worker", "--backend", "kubernetes", "--until-empty"]
    # Every $(VAR) of the arguments is defined by an explicit env entry, which Kubernetes expands.
    env = {e["name"]: e for e in container["env"]}
    config = render(CUSTOM)[5]["data"]
    for variable in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert env[variable]["valueFrom"]["configMapKeyRef"] == {"name": "forager-worker", "key": variable}
        assert variable in config
    assert config["FORAGER_MODEL"] == "https://llm.internal/v1" and config["FORAGER_FORMAT"] == "cwm_text"
    assert env["FORAGER_DB"]["valueFrom"]["secretKeyRef"] == {"name": "forager-db", "key": "database-url"}
    assert env["FORAGER_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # SIGTERM: the worker's grace to finish its episode fits in the pod's.
    assert pod["terminationGracePeriodSeconds"] > int(config["FORAGER_GRACE"])


def test_rbac_covers_what_the_kubernetes_backend_does_and_the_policy_isolates_episode_pods() -> None:
    _, account, role, binding, policy, _, _ = render(CUSTOM)
    verbs = {(r["resources"][0]): set(r["verbs"]) for r in role["rules"]}
    assert {"create", "get", "list", "watch", "delete"} <= verbs["pods"]
    assert "create" in verbs["pods/exec"]  # the exec websocket, since Kubernetes 1.30
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "team-a"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchExpressions": [{"key": EPISODE_LABEL, "operator": "Exists"}]}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in spec and "egress" not in spec, "no rule: everything denied"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": "Team_A"}, "not a DNS label"),
        ({"workers": 0}, "at least 1"),
        ({"model": "vllm:8000"}, "not an http(s) URL"),
        ({"action_format": "xml"}, "unknown"),
        ({"db_secret": "no/slash"}, "not a valid Kubernetes name"),
    ],
)
def test_bad_options_are_refused_with_what_to_do(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        ManifestOptions(**change)


# -- the kustomize base and overlay ----------------------------------------------------------------


def test_the_checked_in_base_is_what_render_writes_with_the_defaults(tmp_path: Path) -> None:
    write(render(), tmp_path)
    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    checked_in = {p.name: p.read_text() for p in BASE.iterdir()}
    assert checked_in == written, "regenerate with: forager k8s render --out k8s/base"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_file_of_the_base_validates_and_the_kustomization_lists_them_all(version: str) -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    files = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    for name in files:
        (obj,) = documents((BASE / name).read_text())
        validate(obj, version)


def test_every_patch_of_the_overlay_targets_an_object_of_the_base() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../../base"]
    base = {(o["kind"], o["metadata"]["name"]) for o in render()}
    for patch in kustomization["patches"]:
        (obj,) = documents((OVERLAY / patch["path"]).read_text())
        assert (obj["kind"], obj["metadata"]["name"]) in base, patch["path"]


@pytest.mark.parametrize("version", VERSIONS)
def test_kustomize_builds_the_base_and_the_overlay_into_valid_objects(version: str) -> None:
    if shutil.which("kubectl") is None:  # CI's machines ship it: there, its absence is a failure
        message = "kubectl (with its built-in kustomize) is not on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    built = {}
    for directory in (BASE, OVERLAY):
        done = subprocess.run(
            ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        built[directory] = documents(done.stdout)
        for obj in built[directory]:
            validate(obj, version)
    assert len(built[BASE]) == len(built[OVERLAY]) == 7
    overlay = {o["kind"]: o for o in built[OVERLAY]}
    assert overlay["Namespace"]["metadata"]["name"] == "forager-team-a"
    assert {o["metadata"].get("namespace") for o in built[OVERLAY] if o["kind"] != "Namespace"} == {
        "forager-team-a"
    }
    assert overlay["RoleBinding"]["subjects"][0]["namespace"] == "forager-team-a"
    job = overlay["Job"]["spec"]
    assert job["parallelism"] == job["completions"] == 16
    assert job["completionMode"] == "Indexed", "the patch merged into the base's Job"
    (container,) = job["template"]["spec"]["containers"]
    assert container["image"].endswith("/forager/worker:2026-12-06")
    assert container["args"][:4] == ["worker", "--backend", "kubernetes", "--until-empty"]


# -- the CLI ------------------------------------------------------------------------------------


def test_render_prints_the_objects_or_writes_a_kustomize_directory(tmp_path: Path) -> None:
    done = forager(
        "k8s", "render", "--workers", "12", "--namespace", "team-a", "--image", CUSTOM.image,
        "--model", CUSTOM.model, "--model-name", "coder", "--format", "cwm_text",
        "--db-secret", "forager-db", "--warm", "2", "--pull-secret", "regcred", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert documents(done.stdout) == render(CUSTOM)
    done = forager("k8s", "render", "--out", str(tmp_path / "run"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_text() for p in (tmp_path / "run").iterdir()} == {
        p.name: p.read_text() for p in BASE.iterdir()
    }
    done = forager("k8s", "render", "--namespace", "Bad_Name", home=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: namespace 'Bad_Name' is not a DNS label")


# -- apply and delete, as the official client sends them --------------------------------------------


class Recorder(ThreadingHTTPServer):
    """An HTTP server that records each request and answers with ``answer(method, path)``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.status_for: dict[tuple[str, str], int] = {}
        self.existing: set[str] = set()


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append(
            {"method": self.command, "path": url.path, "query": dict(parse_qsl(url.query)),
             "content_type": self.headers.get("Content-Type"), "auth": self.headers.get("Authorization"),
             "body": body}
        )  # fmt: skip
        status = self.server.status_for.get((self.command, url.path))
        if status is None and self.command == "PATCH":
            status = 200 if url.path in self.server.existing else 201
            self.server.existing.add(url.path)
        answer: dict[str, Any] = body or {"kind": "Status", "status": "Success"}
        if status is None:
            status = 200
            if self.command == "GET" and url.path.endswith("/jobs/forager-worker"):
                answer = {"kind": "Job", "status": {"active": 3, "succeeded": 1, "completedIndexes": "0"}}
            elif self.command == "GET" and url.path.endswith("/pods"):
                answer = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
                    {"metadata": {"name": f"forager-worker-{i}-x", "annotations":
                                  {"batch.kubernetes.io/job-completion-index": str(i)}},
                     "status": {"phase": "Running"}} for i in (1, 0)]}  # fmt: skip
        if self.command == "GET" and url.path.endswith("/log"):
            text = b"worker forager-worker-0-x:1:ab serving m on kubernetes\n3 done, 0 failed"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        if status >= 400:
            answer = {"kind": "Status", "status": "Failure", "code": status, "reason": "Invalid",
                      "message": "field is immutable"}  # fmt: skip
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def cluster_of(api: Recorder) -> Cluster:
    configuration = client.Configuration(host=f"http://127.0.0.1:{api.server_address[1]}")
    configuration.api_key = {"authorization": "Bearer secret-token"}
    return Cluster(configuration=configuration, request_timeout=5)


def test_apply_is_a_server_side_apply_of_each_object_in_order(api: Recorder) -> None:
    objects = render(CUSTOM)
    cluster = cluster_of(api)
    first = cluster.apply(objects)
    again = cluster.apply(objects)
    cluster.close()
    assert [a.created for a in first] == [True] * 7 and [a.created for a in again] == [False] * 7
    sent = api.requests[:7]
    assert [r["path"] for r in sent] == [
        "/api/v1/namespaces/team-a",
        "/api/v1/namespaces/team-a/serviceaccounts/forager-worker",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/forager-worker",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings/forager-worker",
        "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/forager-episodes-isolated",
        "/api/v1/namespaces/team-a/configmaps/forager-worker",
        "/apis/batch/v1/namespaces/team-a/jobs/forager-worker",
    ]
    for request, obj in zip(sent, objects, strict=True):
        assert request["method"] == "PATCH"
        assert request["content_type"] == "application/apply-patch+yaml"
        assert request["query"] == {"fieldManager": "forager", "force": "true"}
        assert request["auth"] == "Bearer secret-token"
        assert request["body"] == obj


def test_apply_names_the_refused_object_and_says_what_to_do_about_a_job(api: Recorder) -> None:
    objects = render()
    api.status_for[("PATCH", object_path(objects[-1]))] = 422
    cluster = cluster_of(api)
    with pytest.raises(ClusterError, match=r"could not apply Job forager-worker: 422 .*field is immutable.*"
                       r"`forager k8s delete` it first"):  # fmt: skip
        cluster.apply(objects)
    cluster.close()


def test_delete_removes_the_job_with_its_pods_then_the_rest_and_leftover_episode_pods(api: Recorder) -> None:
    objects = render(CUSTOM)
    api.status_for[("DELETE", object_path(objects[4]))] = 404  # already gone: not an error
    cluster = cluster_of(api)
    deleted = cluster.delete(objects)
    cluster.close()
    deletes = [r for r in api.requests if r["method"] == "DELETE"]
    assert [r["path"] for r in deletes[:6]] == [object_path(o) for o in reversed(objects[1:])]
    assert deletes[0]["query"] == {"propagationPolicy": "Background"}
    assert deletes[-1]["path"] == "/api/v1/namespaces/team-a/pods"
    assert deletes[-1]["query"]["labelSelector"] == EPISODE_LABEL
    assert deletes[-1]["query"]["gracePeriodSeconds"] == "0"
    assert "NetworkPolicy forager-episodes-isolated" not in deleted and "Job forager-worker" in deleted
    assert not any(r["path"] == "/api/v1/namespaces/team-a" for r in deletes), "the namespace stays"


def test_job_state_and_worker_pods_are_read_by_index(api: Recorder) -> None:
    cluster = cluster_of(api)
    assert cluster.job("team-a") == {"active": 3, "succeeded": 1, "completedIndexes": "0"}
    pods = cluster.worker_pods("team-a")
    cluster.close()
    assert [(p.index, p.phase) for p in pods] == [(0, "Running"), (1, "Running")]
    listing = api.requests[-1]
    assert listing["query"]["labelSelector"] == "batch.kubernetes.io/job-name=forager-worker"


def test_logs_stream_a_worker_pods_lines(api: Recorder) -> None:
    cluster = cluster_of(api)
    lines = list(cluster.logs("team-a", "forager-worker-0-x", tail=50))
    cluster.close()
    assert lines == ["worker forager-worker-0-x:1:ab serving m on kubernetes", "3 done, 0 failed"]
    request = api.requests[-1]
    assert request["path"] == "/api/v1/namespaces/team-a/pods/forager-worker-0-x/log"
    assert request["query"] == {"container": "worker", "tailLines": "50", "follow": "false"}


# -- status, from the store alone ------------------------------------------------------------------


def test_status_reads_the_queue_from_the_store_without_a_cluster(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'forager.db'}"
    with Store(url) as store:
        tasks = make_tasks(store, 5)
        store.enqueue([t.id for t in tasks], action_format="function_calling")
        done = store.claim("pod-0:7:aa", lease_seconds=60)
        leased = store.claim("pod-1:7:bb", lease_seconds=60)
        assert done and leased
        assert store.complete(done, episode_for(done), [])
    env = {"FORAGER_K8S_KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    shown = forager("--db", url, "k8s", "status", "--json", home=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert {k: status[k] for k in ("queued", "leased", "done", "failed", "remaining")} == {
        "queued": 3, "leased": 1, "done": 1, "failed": 0, "remaining": 4,
    }  # fmt: skip
    assert status["episodes_last_hour"] == 1
    assert list(status["heartbeats"]) == ["pod-1:7:bb"]
    assert status["job"] is None and "no Kubernetes configuration" in status["job_error"]
    shown = forager("--db", url, "k8s", "status", "--no-cluster", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "queued 3, leased 1, done 1, failed 0; 1 episodes in the last hour" in shown.stdout
    assert "worker pod-1:7:bb: last heartbeat" in shown.stdout


# -- Forager's worker image ------------------------------------------------------------------------


def test_the_documented_dockerfile_is_the_recipe_images_self_follows() -> None:
    assert (ROOT / "k8s" / "Dockerfile").read_text() == self_dockerfile()
    assert (ROOT / "k8s" / "Dockerfile.dockerignore").read_text() == self_dockerignore()
    job = render()[-1]["spec"]["template"]["spec"]
    assert job["securityContext"]["runAsUser"] == WORKER_UID == job["securityContext"]["runAsGroup"]


@pytest.fixture(scope="module")
def worker_image(docker_client, tmp_path_factory) -> Iterator[str]:
    """Forager's worker image built from this checkout (``forager images self``), removed afterwards."""
    tag = f"forager/worker:test-{secrets.token_hex(4)}"
    image = build_self_image(
        docker_client, find_checkout(), NetworkSettings.from_environment(), tag=tag,
        log_dir=tmp_path_factory.mktemp("worker-image"),
    )  # fmt: skip
    assert image.tag == tag
    yield tag
    docker_client.images.remove(tag, force=True)


def job_container(options: ManifestOptions) -> tuple[list[str], dict[str, str]]:
    """The command and environment of the Job's worker container as the kubelet makes them: env from
    the ConfigMap (Secret references left out), then ``$(VAR)`` expanded in the arguments."""
    objects = render(options)
    config = objects[5]["data"]
    (container,) = objects[-1]["spec"]["template"]["spec"]["containers"]
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in entry["valueFrom"]:
            env[entry["name"]] = config[entry["valueFrom"]["configMapKeyRef"]["key"]]
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], arg) for arg in container["args"]]
    return [*container["command"], *args], env


@pytest.mark.docker
def test_the_worker_image_runs_forager_the_way_the_job_runs_it(docker_client, worker_image: str) -> None:
    config = docker_client.images.get(worker_image).attrs["Config"]
    assert config["User"] == f"{WORKER_UID}:{WORKER_UID}"
    _, env = job_container(ManifestOptions())

    def run(*args: str) -> str:
        # As the Job's pod: read-only root, scratch /tmp, no capabilities, its env, no network needed.
        return docker_client.containers.run(
            worker_image, list(args), remove=True, read_only=True, tmpfs={"/tmp": ""}, network_mode="none",
            cap_drop=["ALL"], security_opt=["no-new-privileges"], environment=env,
        ).decode()  # fmt: skip

    status = json.loads(
        run("forager", "--db", "sqlite:////tmp/forager/q.db", "k8s", "status", "--no-cluster", "--json")
    )
    assert status["remaining"] == 0 and status["job"] is None
    assert "--until-empty" in run("forager", "worker", "--help")
    assert documents(run("forager", "k8s", "render", "--workers", "3")) == render(ManifestOptions(workers=3))


@pytest.mark.docker
@pytest.mark.postgres
def test_a_pod_of_the_job_runs_the_queue_through_the_kubernetes_api_in_cluster(
    docker_client, worker_image: str, postgres_url: str, tmp_path: Path
) -> None:
    """The worker image, run with the Job's command, env and security as a pod of it would be, with the
    in-cluster configuration of its service account, empties a queue through the test API server."""
    (tmp_path / "tls").mkdir()
    server = K8sTestServer(docker_client, tls_dir=tmp_path / "tls").start()
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(server.token)
    (account / "namespace").write_text("forager-drill")
    shutil.copy(tmp_path / "tls" / "server.crt", account / "ca.crt")
    for path in [account, *account.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    container = None
    with private_database(postgres_url) as url, Store(url) as store:
        tag = build_fixture_tasks(docker_client, store, tmp_path / "farm", max_tasks=2)
        tasks = store.list_tasks(status="verified")
        assert store.enqueue([t.id for t in tasks], action_format="function_calling") == len(tasks) >= 1
        oracle, model = serve_oracle(url, tmp_path / "home")
        try:
            command, env = job_container(ManifestOptions(namespace="forager-drill", model=model, workers=1))
            env |= {
                "FORAGER_DB": url,  # from the Secret, in the cluster
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": server.url.rsplit(":", 1)[1],
            }
            container = docker_client.containers.run(
                worker_image, command, detach=True, read_only=True, tmpfs={"/tmp": ""},
                network_mode="host", cap_drop=["ALL"], security_opt=["no-new-privileges"], environment=env,
                volumes={str(account): {"bind": SERVICE_ACCOUNT_DIR, "mode": "ro"}},
                labels=owner_labels(),
            )  # fmt: skip
            namespaces = set()
            deadline = time.monotonic() + 900
            while container.status != "exited" and time.monotonic() < deadline:
                namespaces |= {namespace for namespace, _ in list(server.pods)}
                time.sleep(0.2)
                container.reload()
            exit_code = container.wait(timeout=10)["StatusCode"]
            logs = container.logs().decode(errors="replace")
            assert exit_code == 0, logs[-3000:]
            counts = store.queue_counts()
            assert (counts.done, counts.failed, counts.remaining) == (len(tasks), 0, 0), logs[-3000:]
            assert store.count_episodes() == len(tasks)
            assert namespaces == {"forager-drill"}, "episode pods go in the service account's namespace"
            assert not server.pods, "every episode pod deleted"
        finally:
            if container is not None:
                container.remove(force=True)
            oracle.terminate()
            oracle.wait(30)
            server.stop()
            docker_client.images.remove(tag, force=True)
