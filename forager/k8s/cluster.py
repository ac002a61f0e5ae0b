"""Talking to a cluster about a foraging run: server-side apply, the Job's state, worker logs, delete.

Objects are applied with server-side apply (``PATCH`` with ``application/apply-patch+yaml``, field
manager ``forager``, conflicts forced): applying again after changing an option updates the fields
Forager owns and leaves the rest alone. The client's configuration is found as the Kubernetes backend
finds it (``FORAGER_K8S_KUBECONFIG``/``KUBECONFIG``, ``FORAGER_K8S_CONTEXT``, or in-cluster).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from core.errors import ForagerError
from envs.backend import EPISODE_LABEL
from envs.kubernetes_client import describe_error, is_transient, load_configuration
from forager.k8s.manifests import JOB_NAME_LABEL, WORKER

FIELD_MANAGER = "forager"
#: The annotation Kubernetes puts on an Indexed Job's pods.
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
_PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "NetworkPolicy": "networkpolicies",
    "Job": "jobs",
}
_CALL_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


class ClusterError(ForagerError):
    """The cluster refused or did not answer."""


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    created: bool
    """True when the object did not exist before."""


@dataclass(frozen=True)
class WorkerPod:
    name: str
    index: int | None
    phase: str


def object_path(obj: dict[str, Any]) -> str:
    """The REST path of ``obj`` (``/apis/batch/v1/namespaces/forager/jobs/forager-worker``)."""
    kind, metadata = obj["kind"], obj["metadata"]
    if kind not in _PLURALS:
        raise ClusterError(f"forager k8s does not apply objects of kind {kind}")
    version = obj["apiVersion"]
    root = f"/api/{version}" if "/" not in version else f"/apis/{version}"
    scope = f"/namespaces/{metadata['namespace']}" if kind != "Namespace" else ""
    return f"{root}{scope}/{_PLURALS[kind]}/{metadata['name']}"


class Cluster:
    """One API client for one cluster; ``close()`` when done."""

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        configuration: client.Configuration | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self.configuration = configuration or load_configuration(kubeconfig, context)
        self.request_timeout = request_timeout
        self.api_client = client.ApiClient(self.configuration)
        self.core = client.CoreV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def apply(
        self, objects: list[dict[str, Any]], *, report: Callable[[Applied], None] = lambda _: None
    ) -> list[Applied]:
        """Server-side apply each object in order; raise ``ClusterError`` at the first refusal."""
        applied = []
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            try:
                _, status = self._request(
                    "PATCH", object_path(obj), body=obj, content_type="application/apply-patch+yaml",
                    query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                )  # fmt: skip
            except _CALL_ERRORS as exc:
                hint = ""
                if kind == "Job" and isinstance(exc, ApiException) and exc.status == 422:
                    hint = (
                        " (a Job's pod template cannot change: `forager k8s delete` it first, or wait "
                        "until it finished and its TTL removed it)"
                    )
                raise ClusterError(f"could not apply {kind} {name}: {describe_error(exc)}{hint}") from exc
            applied.append(Applied(kind, name, created=status == 201))
            report(applied[-1])
        return applied

    def delete(self, objects: list[dict[str, Any]], *, namespace: bool = False) -> list[str]:
        """Delete ``objects`` (the Job first, its pods with it) and every episode pod left in their
        namespace; the Namespace itself only if ``namespace``. Returns what was deleted."""
        deleted = []
        for obj in reversed(objects):
            if obj["kind"] == "Namespace" and not namespace:
                continue
            try:
                # Background: a Job's pods go with it (the API's default for Jobs orphans them).
                self._request("DELETE", object_path(obj), query=[("propagationPolicy", "Background")])
            except ApiException as exc:
                if exc.status == 404:
                    continue
                what = f"{obj['kind']} {obj['metadata']['name']}"
                raise ClusterError(f"could not delete {what}: {describe_error(exc)}") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise ClusterError(f"the Kubernetes API did not answer: {describe_error(exc)}") from exc
            deleted.append(f"{obj['kind']} {obj['metadata']['name']}")
        target = next((o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"), None)
        if target and not namespace:
            self._call(
                self.core.delete_collection_namespaced_pod, target, label_selector=EPISODE_LABEL,
                grace_period_seconds=0, _request_timeout=(10.0, self.request_timeout),
            )  # fmt: skip
            deleted.append(f"episode pods in {target}")
        return deleted

    def job(self, namespace: str) -> dict[str, Any] | None:
        """The worker Job's status (active, succeeded, failed, completedIndexes, conditions), or None."""
        try:
            data, _ = self._request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{WORKER}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ClusterError(f"could not read Job {WORKER}: {describe_error(exc)}") from exc
        return data.get("status", {})

    def worker_pods(self, namespace: str) -> list[WorkerPod]:
        """The worker Job's pods, by index."""
        pods = self._call(
            self.core.list_namespaced_pod, namespace, label_selector=f"{JOB_NAME_LABEL}={WORKER}",
            _request_timeout=(10.0, self.request_timeout),
        ).items  # fmt: skip
        found = []
        for pod in pods:
            index = (pod.metadata.annotations or {}).get(INDEX_ANNOTATION)
            phase = pod.status.phase if pod.status else "Unknown"
            found.append(WorkerPod(pod.metadata.name, int(index) if index else None, phase or "Unknown"))
        return sorted(found, key=lambda p: (p.index is None, p.index, p.name))

    def logs(
        self, namespace: str, pod: str, *, tail: int | None = None, follow: bool = False
    ) -> Iterator[str]:
        """Lines of a worker pod's log, as they come when ``follow``."""
        response = self._call(
            self.core.read_namespaced_pod_log, pod, namespace, container="worker", tail_lines=tail,
            follow=follow, _preload_content=False,
            _request_timeout=None if follow else (10.0, self.request_timeout),
        )  # fmt: skip
        try:
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (line.decode(errors="replace") for line in lines)
            if pending:
                yield pending.decode(errors="replace")
        finally:
            response.release_conn()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> tuple[Any, int]:
        """One REST call (retried like the others); the decoded answer and its status. Raises
        ``ApiException`` when the status is not 2xx."""

        def send() -> tuple[Any, int]:
            method_, url, headers, data, _ = self.api_client.param_serialize(
                method, path, query_params=query or [], body=body, auth_settings=["BearerToken"],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
            )  # fmt: skip
            response = self.api_client.call_api(
                method_, url, header_params=headers, body=data,
                _request_timeout=(10.0, self.request_timeout),
            )  # fmt: skip
            raw = response.read()
            if not 200 <= response.status < 300:
                raise ApiException(http_resp=response)
            return json.loads(raw or b"{}"), response.status

        return self._call(send)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """``method`` retried on conflicts, throttling, 5xx and lost connections."""
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(4),
            wait=wait_exponential(multiplier=0.2, max=3.0),
            reraise=True,
        )
        return retrying(method, *args, **kwargs)
