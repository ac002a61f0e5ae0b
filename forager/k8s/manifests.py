"""The Kubernetes objects of a foraging run, rendered from options as plain dicts.

This module is the one source of the manifests: ``k8s/base/`` in the checkout is exactly
``forager k8s render --out k8s/base`` with the defaults (a test keeps them equal), and ``forager k8s
apply`` sends the same dicts. The objects:

- a Namespace, and in it a ServiceAccount with a Role (+ RoleBinding) that lets worker pods create,
  watch, exec into and delete episode pods;
- a NetworkPolicy that denies all ingress and egress to pods carrying the episode label, so an
  episode has no network even though it runs beside workers that reach the database and the model;
- a ConfigMap with the worker's settings (model URL, action format, warm pool, lease, grace);
- an Indexed Job of workers (``forager worker --backend kubernetes --until-empty``): each index runs
  one worker until the queue is empty, so the Job completes when the work is done. The database URL
  and the model's API key come from a Secret the user creates (its name: ``db_secret``).

Episode budgets (turns, tokens, wall clock) are not here: they travel with each work item, fixed by
``forager forage --enqueue``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.errors import ForagerError
from envs.backend import EPISODE_LABEL

#: The name of the worker objects (ServiceAccount, Role, RoleBinding, ConfigMap, Job).
WORKER = "forager-worker"
#: The NetworkPolicy isolating episode pods.
ISOLATION = "forager-episodes-isolated"
#: The worker image ``forager images self`` builds by default.
DEFAULT_IMAGE = "forager/worker:latest"
#: Keys of the user's Secret.
DATABASE_KEY = "database-url"
API_KEY_KEY = "api-key"
#: The label Kubernetes puts on an Indexed Job's pods, naming their Job.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
#: Exit status of a usage error (typer): every index would fail alike, so the Job fails at once.
_USAGE_ERROR = 2
_FORMATS = ("function_calling", "cwm_text")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class ManifestError(ForagerError):
    """An option cannot make a valid manifest."""

    exit_code = 2


@dataclass(frozen=True)
class ManifestOptions:
    """What a foraging run on a cluster is made of. The defaults render ``k8s/base``."""

    namespace: str = "forager"
    workers: int = 4
    """Worker pods running at once (the Job's parallelism and completions)."""
    image: str = DEFAULT_IMAGE
    """Forager's own worker image (``forager images self``), as the cluster pulls it."""
    model: str = "http://model-server:8000/v1"
    """Base URL of the OpenAI-compatible model server, as reached from the cluster."""
    model_name: str | None = None
    """Model id to request; None: the server's first."""
    action_format: str = "function_calling"
    db_secret: str = "forager"
    """The Secret holding ``database-url`` (required) and ``api-key`` (optional)."""
    warm: int = 0
    """Environments each worker keeps started (``forager worker --warm``)."""
    lease_seconds: int = 120
    grace_seconds: int = 25
    """Seconds the episode under way may take to finish after SIGTERM (the pod's grace adds 5)."""
    backoff_limit_per_index: int = 3
    """Failed pods tolerated per index (evictions and preemptions do not count)."""
    ttl_seconds_after_finished: int = 86_400
    image_pull_secrets: tuple[str, ...] = ()
    cpu: str = "500m"
    memory: str = "1Gi"
    """The worker container's own requests (memory is also its limit); episode pods have their own."""
    labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/part-of": "forager"})

    def __post_init__(self) -> None:
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ManifestError(
                f"namespace {self.namespace!r} is not a DNS label (lower-case letters, digits, '-', "
                "at most 63 characters)"
            )
        if not _DNS_SUBDOMAIN.fullmatch(self.db_secret):
            raise ManifestError(f"secret name {self.db_secret!r} is not a valid Kubernetes name")
        if self.workers < 1:
            raise ManifestError(f"--workers must be at least 1, not {self.workers}")
        if not self.image or any(c.isspace() for c in self.image):
            raise ManifestError(f"image {self.image!r} is not an image reference")
        url = urlsplit(self.model)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ManifestError(
                f"model URL {self.model!r} is not an http(s) URL: give the server's base URL as the "
                "cluster reaches it, e.g. http://vllm.models.svc:8000/v1"
            )
        if self.action_format not in _FORMATS:
            raise ManifestError(f"action format {self.action_format!r} is unknown: use one of {_FORMATS}")
        if min(self.warm, self.lease_seconds - 1, self.grace_seconds, self.backoff_limit_per_index) < 0:
            raise ManifestError("warm, grace and the backoff limit must be >= 0, the lease >= 1 second")


def render(options: ManifestOptions | None = None) -> list[dict[str, Any]]:
    """The objects, in the order they are applied (the Namespace first, the Job last)."""
    o = options or ManifestOptions()
    return [
        _object("v1", "Namespace", o.namespace, o, namespaced=False),
        _object("v1", "ServiceAccount", WORKER, o),
        _role(o),
        _role_binding(o),
        _network_policy(o),
        _config_map(o),
        _job(o),
    ]


def file_name(obj: dict[str, Any]) -> str:
    """The file an object is written to: its kind in lower case (``k8s/base/job.yaml``)."""
    return f"{obj['kind'].lower()}.yaml"


def kustomization(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A kustomization listing the files of ``objects``."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [file_name(obj) for obj in objects],
    }


def _object(
    api_version: str, kind: str, name: str, o: ManifestOptions, *, namespaced: bool = True
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": o.namespace, "labels": dict(o.labels)}
    if not namespaced:
        del metadata["namespace"]
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def _role(o: ManifestOptions) -> dict[str, Any]:
    role = _object("rbac.authorization.k8s.io/v1", "Role", WORKER, o)
    role["rules"] = [
        # The Kubernetes backend creates, watches and deletes one pod per episode (and gc lists them).
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete"]},
        # Its shell is an exec websocket: a GET upgrade, authorized as "create" since Kubernetes 1.30.
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
        # To say why an episode pod died.
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
    ]
    return role


def _role_binding(o: ManifestOptions) -> dict[str, Any]:
    binding = _object("rbac.authorization.k8s.io/v1", "RoleBinding", WORKER, o)
    binding["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WORKER}
    binding["subjects"] = [{"kind": "ServiceAccount", "name": WORKER, "namespace": o.namespace}]
    return binding


def _network_policy(o: ManifestOptions) -> dict[str, Any]:
    policy = _object("networking.k8s.io/v1", "NetworkPolicy", ISOLATION, o)
    # Both policy types and no rules: nothing in, nothing out (DNS included) for every episode pod.
    policy["spec"] = {
        "podSelector": {"matchExpressions": [{"key": EPISODE_LABEL, "operator": "Exists"}]},
        "policyTypes": ["Ingress", "Egress"],
    }
    return policy


def _config_map(o: ManifestOptions) -> dict[str, Any]:
    config = _object("v1", "ConfigMap", WORKER, o)
    config["data"] = {
        "FORAGER_MODEL": o.model,
        "FORAGER_FORMAT": o.action_format,
        "FORAGER_WARM": str(o.warm),
        "FORAGER_LEASE": str(o.lease_seconds),
        "FORAGER_GRACE": str(o.grace_seconds),
    }
    if o.model_name:
        config["data"]["FORAGER_MODEL_NAME"] = o.model_name
    return config


def _worker_args(o: ManifestOptions) -> list[str]:
    """``forager worker`` arguments; ``$(VAR)`` is expanded by Kubernetes from the container's env."""
    args = [
        "worker", "--backend", "kubernetes", "--until-empty",
        "--model", "$(FORAGER_MODEL)", "--format", "$(FORAGER_FORMAT)", "--warm", "$(FORAGER_WARM)",
        "--lease", "$(FORAGER_LEASE)", "--grace", "$(FORAGER_GRACE)",
    ]  # fmt: skip
    if o.model_name:
        args += ["--model-name", "$(FORAGER_MODEL_NAME)"]
    return args


def _environment(o: ManifestOptions) -> list[dict[str, Any]]:
    from_config = [
        {"name": key, "valueFrom": {"configMapKeyRef": {"name": WORKER, "key": key}}}
        for key in _config_map(o)["data"]
    ]
    return [
        *from_config,
        {"name": "FORAGER_DB", "valueFrom": {"secretKeyRef": {"name": o.db_secret, "key": DATABASE_KEY}}},
        {
            "name": "FORAGER_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": o.db_secret, "key": API_KEY_KEY, "optional": True}},
        },
        # The root filesystem is read-only: the home (logs, artifacts) lives on the pod's scratch volume.
        {"name": "FORAGER_HOME", "value": "/tmp/forager"},
        {"name": "HOME", "value": "/tmp"},
    ]


def _job(o: ManifestOptions) -> dict[str, Any]:
    job = _object("batch/v1", "Job", WORKER, o)
    pod_labels = {**o.labels, "app.kubernetes.io/component": "worker"}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": WORKER,
        "restartPolicy": "Never",
        # The worker's own grace (finish or give back the episode under way) plus time to exit.
        "terminationGracePeriodSeconds": o.grace_seconds + 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "worker",
                "image": o.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["forager"],
                "args": _worker_args(o),
                "env": _environment(o),
                # Settings added to the ConfigMap by an overlay (FORAGER_K8S_NODE_SELECTOR,
                # FORAGER_K8S_TOLERATIONS, FORAGER_K8S_IMAGE_PULL_SECRETS...) reach the backend too.
                "envFrom": [{"configMapRef": {"name": WORKER}}],
                "resources": {
                    "requests": {"cpu": o.cpu, "memory": o.memory},
                    "limits": {"memory": o.memory},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    if o.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in o.image_pull_secrets]
    job["spec"] = {
        "completionMode": "Indexed",
        "completions": o.workers,
        "parallelism": o.workers,
        "backoffLimitPerIndex": o.backoff_limit_per_index,
        "podFailurePolicy": {
            "rules": [
                # An evicted or preempted worker gave its item back (or its lease expires): run the index
                # again without counting it as a failure.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "worker", "operator": "In", "values": [_USAGE_ERROR]},
                },
            ]
        },
        "ttlSecondsAfterFinished": o.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    return job
