"""Reaching the Kubernetes API: configuration, options from the environment, and errors described.

The backend (``envs.kubernetes_backend``) and the cluster commands (``forager.k8s.cluster``) connect the
same way: a kubeconfig (``FORAGER_K8S_KUBECONFIG``/``FORAGER_K8S_CONTEXT``, else ``KUBECONFIG`` and its
current context) or, inside a cluster with no kubeconfig, the pod's service account.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from envs.backend import BackendError

NAMESPACE_ENV = "FORAGER_K8S_NAMESPACE"
KUBECONFIG_ENV = "FORAGER_K8S_KUBECONFIG"
CONTEXT_ENV = "FORAGER_K8S_CONTEXT"
PULL_SECRETS_ENV = "FORAGER_K8S_IMAGE_PULL_SECRETS"
NODE_SELECTOR_ENV = "FORAGER_K8S_NODE_SELECTOR"
TOLERATIONS_ENV = "FORAGER_K8S_TOLERATIONS"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call is worth repeating: conflicts, throttling, server errors, lost connections."""
    if isinstance(exc, ApiException):
        if exc.status == 409:
            return api_reason(exc) != "AlreadyExists"
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def api_reason(exc: ApiException) -> str:
    """The ``reason`` of the API's Status object in a failed call's body (``AlreadyExists``...)."""
    try:
        return json.loads(exc.body or "{}").get("reason", "")
    except (ValueError, AttributeError):
        return ""


def describe_error(exc: BaseException) -> str:
    """A failed call in one line: status, reason and the API's message, or the exception."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
    return f"{exc.__class__.__name__}: {exc}"


def load_configuration(kubeconfig: str | None, context: str | None) -> client.Configuration:
    configuration = client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        raise BackendError(
            f"no Kubernetes configuration: {exc} (set KUBECONFIG or {KUBECONFIG_ENV} to a kubeconfig, "
            "or run inside a cluster)"
        ) from exc
    return configuration


def context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, ValueError):
        return None
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return (chosen or {}).get("context", {}).get("namespace")


def service_account_namespace() -> str | None:
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def split_names(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def env_pairs(variable: str) -> dict[str, str]:
    pairs = {}
    for item in split_names(os.environ.get(variable)):
        key, equals, value = item.partition("=")
        if not equals:
            raise BackendError(f"{variable} must be key=value pairs separated by commas, not {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def env_tolerations() -> list[dict[str, Any]]:
    raw = os.environ.get(TOLERATIONS_ENV)
    if not raw:
        return []
    try:
        tolerations = json.loads(raw)
    except ValueError as exc:
        raise BackendError(f"{TOLERATIONS_ENV} must be a JSON list of tolerations: {exc}") from exc
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        raise BackendError(f"{TOLERATIONS_ENV} must be a JSON list of objects")
    return tolerations
