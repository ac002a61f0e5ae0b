"""The Kubernetes backend: one locked-down pod per environment, driven with the official client.

Each environment is a pod (``restartPolicy: Never``, an ``activeDeadlineSeconds`` from the caller's
lifetime, requests = limits from ``Limits``, no service account token, no service links, no privilege
escalation, the capabilities of ``envs.backend.CAPABILITIES``, seccomp ``RuntimeDefault``, deleted
with grace 0). Its shell is one exec websocket (``envs.kubernetes_runtime``). Episode pods are meant to
run without network: the NetworkPolicy that denies it ships with the manifests under ``k8s/``.

Options come from the constructor or, when not given, from the environment:

- ``FORAGER_K8S_NAMESPACE`` (else the kubeconfig context's namespace, else the pod's own namespace
  in a cluster, else ``default``);
- ``FORAGER_K8S_KUBECONFIG`` and ``FORAGER_K8S_CONTEXT`` (else ``KUBECONFIG`` and its current
  context; inside a cluster, with no kubeconfig, the pod's service account);
- ``FORAGER_K8S_IMAGE_PULL_SECRETS`` (names, comma-separated), ``FORAGER_K8S_NODE_SELECTOR``
  (``key=value,...``) and ``FORAGER_K8S_TOLERATIONS`` (a JSON list of tolerations).

The backend holds one ``Configuration`` and one ``ApiClient`` for all REST calls, shared by every thread
(urllib3's pool is thread-safe). ``kubernetes.stream.stream`` swaps ``call_api`` on the client it is
given while it connects, so each websocket is opened through a throwaway ``ApiClient`` over the same
configuration: sharing one there lets threads run each other's REST calls as websockets.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import WSClient
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from core.errors import ForagerError
from envs.backend import CAPABILITIES, EPISODE_LABEL, BackendError, Limits, Removed, lifetime_seconds
from envs.kubernetes_client import (
    CONTEXT_ENV,
    KUBECONFIG_ENV,
    NAMESPACE_ENV,
    NODE_SELECTOR_ENV,
    PULL_SECRETS_ENV,
    api_reason,
    context_namespace,
    describe_error,
    env_pairs,
    env_tolerations,
    is_transient,
    load_configuration,
    service_account_namespace,
    split_names,
)
from envs.kubernetes_runtime import KubernetesRuntime
from envs.runtime import EnvironmentDied
from images.engine import OWNER_LABEL, Owner, owner_labels, owner_state

#: The label naming the machine of the process that owns a pod (the full owner is an annotation:
#: ``host:pid:start`` is not a valid label value), so a collector lists only its machine's pods.
OWNER_HOST_LABEL = "forager.owner-host"
#: The name of the episode container in every pod.
CONTAINER = "episode"
#: Waiting reasons of a container whose image the cluster cannot get.
_IMAGE_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
#: Waiting reasons of a container the cluster cannot create.
_CREATE_ERRORS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
#: Garbage collection looks again this long after a pass that removed something (see DockerBackend).
_SETTLE_SECONDS = 1.0
_MAX_PASSES = 5


class KubernetesBackend:
    """Environments as pods in one namespace of a cluster (see the module's docstring for options)."""

    kind = "kubernetes"

    def __init__(
        self,
        namespace: str | None = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        configuration: client.Configuration | None = None,
        image_pull_secrets: list[str] | None = None,
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
        request_timeout: float = 30.0,
        start_timeout: float = 300.0,
        image_references: Callable[[str], str | None] | None = None,
    ) -> None:
        """Connect (``configuration`` if given, else kubeconfig or in-cluster) and check the API answers.

        ``request_timeout`` bounds every API call and websocket open, host-side; ``start_timeout`` how
        long a pod may take to be scheduled, pull its image and run. ``image_references`` maps a local
        image tag to where the cluster pulls it (``forager images push`` records that reference in the
        store); a tag it does not map runs as it is. Raises ``BackendError`` when no
        configuration is found or the API does not answer.
        """
        kubeconfig = kubeconfig or os.environ.get(KUBECONFIG_ENV)
        context = context or os.environ.get(CONTEXT_ENV)
        self.configuration = configuration or load_configuration(kubeconfig, context)
        self.namespace = (
            namespace
            or os.environ.get(NAMESPACE_ENV)
            or (None if configuration else context_namespace(kubeconfig, context))
            or service_account_namespace()
            or "default"
        )
        self.image_pull_secrets = (
            image_pull_secrets
            if image_pull_secrets is not None
            else split_names(os.environ.get(PULL_SECRETS_ENV))
        )
        self.node_selector = node_selector if node_selector is not None else env_pairs(NODE_SELECTOR_ENV)
        self.tolerations = tolerations if tolerations is not None else env_tolerations()
        self.image_references = image_references
        self.request_timeout = request_timeout
        self.start_timeout = start_timeout
        self.api_client = client.ApiClient(self.configuration)
        self.core = client.CoreV1Api(self.api_client)
        try:
            self.call(self.core.list_namespaced_pod, self.namespace, label_selector=EPISODE_LABEL, limit=1)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            self.api_client.close()
            where = f"the Kubernetes API at {self.configuration.host}"
            if isinstance(exc, ApiException) and exc.status in (401, 403):
                raise BackendError(
                    f"{where} refused to list pods in namespace {self.namespace!r} "
                    f"({describe_error(exc)}): check the kubeconfig's credentials and that its Role grants "
                    "pods and pods/exec"
                ) from exc
            raise BackendError(f"{where} does not answer: {describe_error(exc)}") from exc

    # -- the protocol -----------------------------------------------------------------------------

    def start(
        self,
        image: str,
        *,
        episode: str | None = None,
        limits: Limits | None = None,
        workdir: str = "/repo",
        lifetime: float | None = None,
    ) -> KubernetesRuntime:
        limits = limits or Limits()
        episode = episode or secrets.token_hex(8)
        image = (self.image_references and self.image_references(image)) or image
        name = f"forager-{_slug(episode)[:40].rstrip('-')}-{secrets.token_hex(3)}"
        pod = self._manifest(name, image, episode, limits, workdir, lifetime)
        try:
            self.call(self.core.create_namespaced_pod, self.namespace, pod)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # A create retried after a lost answer finds its own pod (the name has a random part).
            if not (isinstance(exc, ApiException) and api_reason(exc) == "AlreadyExists"):
                with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
                    self.delete_pod(name)  # in case a create that seemed to fail was made
                raise EnvironmentDied(f"could not create a pod from {image}: {describe_error(exc)}") from exc
        runtime = KubernetesRuntime(self, name, workdir, limits)
        try:
            self._wait_running(name, image)
            runtime.open()
        except BaseException:
            runtime.close()
            raise
        return runtime

    def image_exists(self, image: str) -> bool:
        """Always True: the cluster pulls images itself, and whether it can is known only when a pod
        starts — :meth:`start` then raises a ``ForagerError`` naming the pull error."""
        return True

    def collect_garbage(
        self, *, older_than: timedelta | None = None, everything: bool = False, labels: Sequence[str] = ()
    ) -> list[Removed]:
        """Delete this namespace's episode pods whose owner process on this machine has exited.

        ``older_than`` also takes pods at least that old whose owner cannot be checked from here (made
        on other machines); ``everything`` takes every episode pod in the namespace. ``labels``
        (``KEY`` or ``KEY=VALUE``) limit all this to the pods carrying every one of them.
        """
        removed: list[Removed] = []
        for _ in range(_MAX_PASSES):
            found = self._collect_once(older_than, everything, labels)
            removed += found
            if not found:
                break
            time.sleep(_SETTLE_SECONDS)
        return removed

    def close(self) -> None:
        self.api_client.close()

    # -- for the runtime --------------------------------------------------------------------------

    def call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` with a deadline, retried on conflicts, throttling, 5xx and
        connection errors (a few times, with jittered backoff)."""
        kwargs.setdefault("_request_timeout", (min(10.0, self.request_timeout), self.request_timeout))
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(5),
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
            reraise=True,
        )
        return retrying(method, *args, **kwargs)

    def exec_stream(self, pod: str, command: list[str], *, stdin: bool) -> WSClient:
        """An exec websocket to ``command`` in ``pod`` (binary channels), opened within the deadline.

        Raises ``ApiException`` (status 0 when the handshake failed), or ``TimeoutError`` if the API
        did not complete the handshake in time (the late stream, if any, is closed when it arrives).
        """
        opened: dict[str, Any] = {}
        lock = threading.Lock()
        done = threading.Event()

        def connect() -> None:
            carrier = client.CoreV1Api(client.ApiClient(self.configuration))  # see the module docstring
            try:
                ws = stream(
                    carrier.connect_get_namespaced_pod_exec, pod, self.namespace,
                    container=CONTAINER, command=command, stdin=stdin, stdout=True, stderr=True,
                    tty=False, binary=True, _preload_content=False,
                )  # fmt: skip
            except Exception as exc:  # handed to the waiting thread
                opened["error"] = exc
            else:
                with lock:
                    if opened.get("abandoned"):
                        ws.close()
                    else:
                        ws.sock.settimeout(self.request_timeout)  # no send or read blocks forever
                        opened["ws"] = ws
            finally:
                carrier.api_client.close()
                done.set()

        threading.Thread(target=connect, daemon=True, name=f"exec-{pod}").start()
        done.wait(self.request_timeout)
        with lock:
            if "ws" in opened:
                return opened["ws"]
            if "error" in opened:
                raise opened["error"]
            opened["abandoned"] = True
        raise TimeoutError(f"the exec into pod {pod} was not answered within {self.request_timeout:.0f} s")

    # -- pods -------------------------------------------------------------------------------------

    def _manifest(
        self, name: str, image: str, episode: str, limits: Limits, workdir: str, lifetime: float | None
    ) -> client.V1Pod:
        seconds = lifetime_seconds(lifetime)
        resources = {"cpu": f"{round(limits.cpus * 1000)}m", "memory": _memory(limits.memory)}
        host = socket.gethostname()
        return client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    EPISODE_LABEL: _label_value(episode),
                    OWNER_HOST_LABEL: _label_value(host),
                    "app.kubernetes.io/managed-by": "forager",
                },
                annotations={
                    **owner_labels(),  # host:pid:start, read back by collect_garbage
                    EPISODE_LABEL: episode,
                    "forager.created": datetime.now(UTC).isoformat(),
                },
            ),
            spec=client.V1PodSpec(
                restart_policy="Never",
                active_deadline_seconds=seconds,
                automount_service_account_token=False,
                enable_service_links=False,
                # The pause container is then PID 1 and reaps the zombies a killed command leaves.
                share_process_namespace=True,
                termination_grace_period_seconds=0,
                image_pull_secrets=[client.V1LocalObjectReference(name=s) for s in self.image_pull_secrets]
                or None,
                node_selector=self.node_selector or None,
                tolerations=self.tolerations or None,
                containers=[
                    client.V1Container(
                        name=CONTAINER,
                        image=image,
                        image_pull_policy="IfNotPresent",
                        # Ends by itself like the pod: an orphan in a cluster without a deadline
                        # enforcer (or a kubelet that lost it) still goes.
                        command=["sleep", str(seconds)],
                        working_dir=workdir,
                        resources=client.V1ResourceRequirements(requests=resources, limits=resources),
                        security_context=client.V1SecurityContext(
                            allow_privilege_escalation=False,
                            capabilities=client.V1Capabilities(drop=["ALL"], add=CAPABILITIES),
                            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
                        ),
                    )
                ],
            ),
        )

    def _wait_running(self, name: str, image: str) -> None:
        """Return once the pod runs; raise if it cannot (its image, its container, the deadline)."""
        deadline = time.monotonic() + self.start_timeout
        last = "it was not scheduled"
        while (remaining := deadline - time.monotonic()) > 0:
            watcher = watch.Watch()
            try:
                for event in watcher.stream(
                    self.core.list_namespaced_pod, self.namespace,
                    field_selector=f"metadata.name={name}", timeout_seconds=max(1, int(remaining)),
                    _request_timeout=(min(10.0, self.request_timeout), remaining + 10),
                ):  # fmt: skip
                    pod: client.V1Pod = event["object"]
                    if event["type"] == "DELETED":
                        raise EnvironmentDied(f"pod {name} was deleted while starting")
                    phase = pod.status.phase if pod.status else None
                    if phase == "Running":
                        watcher.stop()
                        return
                    last = _pending_reason(pod, image)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                if not is_transient(exc):
                    raise EnvironmentDied(f"could not watch pod {name} start: {describe_error(exc)}") from exc
                time.sleep(0.5)
        raise EnvironmentDied(f"pod {name} did not start within {self.start_timeout:.0f} s: {last}")

    def _collect_once(
        self, older_than: timedelta | None, everything: bool, labels: Sequence[str]
    ) -> list[Removed]:
        selector = ",".join([EPISODE_LABEL, *labels])  # older_than and everything judge every machine's
        if not everything and older_than is None:
            selector += f",{OWNER_HOST_LABEL}={_label_value(socket.gethostname())}"
        pods = self.call(self.core.list_namespaced_pod, self.namespace, label_selector=selector).items
        now = datetime.now(UTC)
        removed: list[Removed] = []
        for pod in pods:
            meta = pod.metadata
            age = now - meta.creation_timestamp if meta.creation_timestamp else timedelta(0)
            owner = owner_state({OWNER_LABEL: (meta.annotations or {}).get(OWNER_LABEL, "")})
            if everything:
                reason = "all"
            elif owner is Owner.EXITED:
                reason = "owner exited"
            elif owner is Owner.UNKNOWN and older_than is not None and age >= older_than:
                reason = f"older than {older_than}"
            else:
                continue
            if self.delete_pod(meta.name):
                removed.append(Removed(meta.uid or meta.name, meta.name, "episode", age, reason))
        return removed

    def delete_pod(self, name: str) -> bool:
        """Delete a pod at once (grace 0); False if it was already gone."""
        try:
            self.call(
                self.core.delete_namespaced_pod, name, self.namespace,
                grace_period_seconds=0, propagation_policy="Background",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _pending_reason(pod: client.V1Pod, image: str) -> str:
    """Why a pod is not running yet; raises when it never will."""
    status = pod.status
    if status is None:
        return "no status yet"
    if status.phase in ("Failed", "Succeeded"):
        raise EnvironmentDied(
            f"pod {pod.metadata.name} ended while starting: {status.reason or status.phase}"
        )
    for container in status.container_statuses or []:
        waiting = container.state.waiting if container.state else None
        if waiting is None:
            continue
        if waiting.reason in _IMAGE_ERRORS:
            raise ForagerError(
                f"the cluster cannot pull image {image} ({waiting.reason}: {waiting.message}): push it with "
                "`forager images push` and check the backend's image pull secrets"
            )
        if waiting.reason in _CREATE_ERRORS:
            raise EnvironmentDied(
                f"pod {pod.metadata.name} cannot start: {waiting.reason}: {waiting.message}"
            )
        return f"{waiting.reason}: {waiting.message}"
    for condition in status.conditions or []:
        if condition.status == "False" and condition.message:
            return f"{condition.reason}: {condition.message}"
    return f"phase {status.phase}"


def _memory(docker_size: str) -> str:
    """Docker's size (``2g``, ``512m``, bytes) as a Kubernetes quantity (``2Gi``, ``512Mi``)."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", docker_size.strip().lower())
    if not match:
        raise ForagerError(f"memory limit {docker_size!r} is not a size like 2g or 512m")
    number, unit = match.groups()
    return number + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}[unit]


def _slug(text: str) -> str:
    """``text`` reduced to what a pod name may hold (lower-case letters, digits, inner dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "episode"


def _label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of letters, digits, ``-_.``, alphanumeric at the ends."""
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]) or "x"
