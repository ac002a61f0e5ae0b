"""Images in a registry: pushing built images where a cluster (or another machine) can pull them.

``push`` tags a built image as ``HOST[:PORT]/PREFIX/NAME:TAG`` and pushes it with the engine, which sends
only the layers the registry lacks (the shared base image's layers go once for all repositories). The
pushed reference, pinned to the manifest digest (``…/NAME:TAG@sha256:…``, what a pod should run: a tag
can be moved, a digest cannot), is recorded on the image in the store. ``pull`` does the reverse on a
machine that did not build the image: it pulls the recorded reference and tags it with the image's own
tag, so that episodes there start it by the same name.

A registry over plain HTTP must be one the engine trusts as insecure: the engine trusts 127.0.0.0/8 by
default, any other address needs ``insecure-registries`` in its daemon.json.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from images.engine import describe
from storage import Image, Store

#: ``HOST[:PORT]`` (a dot, a port or ``localhost`` marks a registry host), then an optional path prefix.
_REGISTRY = re.compile(
    r"^(?P<host>(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+|[a-z0-9-]+:\d+|[a-z0-9.-]+:\d+))"
    r"(?P<prefix>(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)/?$"
)
#: Push attempts (the engine retries single layers itself; this covers a registry that went away).
ATTEMPTS = 3


class RegistryError(ForagerError):
    """A push or pull failed, or a registry name is malformed."""


@dataclass(frozen=True)
class PushResult:
    """One image pushed."""

    tag: str
    """The image's local tag, e.g. ``forager/attrs:3f2a…``."""
    reference: str
    """Where it is now: ``HOST[:PORT]/PREFIX/NAME:TAG@sha256:…`` (also recorded in the store)."""
    layers_pushed: int
    layers_skipped: int
    """Layers the registry had already (earlier pushes, other images on the same base)."""
    seconds: float


def parse_registry(text: str) -> str:
    """``HOST[:PORT][/PREFIX]`` checked and without a trailing slash, or a ``RegistryError``."""
    match = _REGISTRY.match(text.strip().lower())
    if match is None or "://" in text:
        raise RegistryError(
            f"invalid registry {text!r}: give HOST[:PORT]/PREFIX, e.g. 127.0.0.1:5000/forager or "
            "registry.example.org/team (no scheme)"
        )
    return match.group("host") + match.group("prefix")


def repository_for(tag: str, registry: str) -> tuple[str, str]:
    """(repository, tag) of a local image tag in ``registry``: ``forager/attrs:1`` → ``REG/attrs``, ``1``."""
    name, _, version = tag.rpartition(":")
    if not name or "/" in version:
        name, version = tag, "latest"
    return f"{registry}/{name.removeprefix('forager/')}", version


def push(
    client: docker.DockerClient,
    store: Store,
    image: Image,
    registry: str,
    *,
    progress: Progress = no_progress,
    attempts: int = ATTEMPTS,
) -> PushResult:
    """Push ``image`` (a built image of the store) to ``registry`` and record the reference in ``store``.

    Retries a failed push (``attempts`` in all, waiting longer each time); layers that reached the
    registry before a failure are not sent again.
    """
    registry = parse_registry(registry)
    repository, version = repository_for(image.tag, registry)
    try:
        client.images.get(image.tag).tag(repository, version)
    except ImageNotFound:
        raise RegistryError(
            f"image {image.tag} is not on this Docker engine: build it here (`forager images build`) "
            "or push it from the machine that built it"
        ) from None
    except DockerException as exc:
        raise RegistryError(f"cannot tag {image.tag} for {registry}: {describe(exc)}") from exc
    started = time.monotonic()
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=2, max=30),
        retry=retry_if_exception_type(RegistryError),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            pushed, skipped, digest = _push_once(client, image.tag, repository, version, progress)
    reference = f"{repository}:{version}@{digest}"
    store.save_image(Image(tag=image.tag, registry_ref=reference))
    progress(ProgressEvent(image.tag, "pushed", f"{pushed} layers sent, {skipped} already there"))
    return PushResult(image.tag, reference, pushed, skipped, time.monotonic() - started)


def pull(client: docker.DockerClient, store: Store, image: Image, *, progress: Progress = no_progress) -> str:
    """Pull ``image``'s recorded registry reference and tag it with the image's own tag; returns the tag.

    Nothing is pulled if the engine has the image already.
    """
    try:
        client.images.get(image.tag)
        return image.tag
    except ImageNotFound:
        pass
    if not image.registry_ref:
        raise RegistryError(
            f"image {image.tag} is neither on this engine nor pushed: run `forager images push "
            f"{image.tag} --registry HOST[:PORT]/PREFIX` where it was built"
        )
    progress(ProgressEvent(image.tag, "pulling", image.registry_ref))
    repository, _, digest = image.registry_ref.partition("@")
    try:
        pulled = client.images.pull(f"{repository.rpartition(':')[0]}@{digest}")
        pulled.tag(*image.tag.rsplit(":", 1))
    except DockerException as exc:
        raise RegistryError(f"cannot pull {image.registry_ref}: {_explain(describe(exc))}") from exc
    progress(ProgressEvent(image.tag, "pulled", image.registry_ref))
    return image.tag


def _push_once(
    client: docker.DockerClient, subject: str, repository: str, version: str, progress: Progress
) -> tuple[int, int, str]:
    """Push once: (layers sent, layers skipped, manifest digest); ``RegistryError`` on any failure."""
    layers: dict[str, str] = {}
    digest = ""
    try:
        for line in client.api.push(repository, tag=version, stream=True, decode=True):
            if "error" in line:
                raise RegistryError(f"pushing {subject} to {repository} failed: {_explain(line['error'])}")
            status, layer = line.get("status", ""), line.get("id")
            if layer and (status in ("Pushed", "Layer already exists") or status.startswith("Mounted from")):
                layers[layer] = "skipped" if status != "Pushed" else "pushed"
            elif layer and status == "Pushing":
                detail = line.get("progressDetail") or {}
                total = detail.get("total")
                if total:
                    progress(
                        ProgressEvent(subject, "pushing", f"layer {layer}", detail.get("current", 0), total)
                    )
            digest = (line.get("aux") or {}).get("Digest", digest)
    except (APIError, DockerException) as exc:
        raise RegistryError(f"pushing {subject} to {repository} failed: {_explain(describe(exc))}") from exc
    if not digest:
        raise RegistryError(f"pushing {subject} to {repository} ended without a manifest digest")
    pushed = sum(state == "pushed" for state in layers.values())
    return pushed, len(layers) - pushed, digest


def _explain(error: str) -> str:
    """The engine's error with what to do about the usual causes."""
    if "connection refused" in error or "no such host" in error:
        return f"{error}. Is the registry running and reachable from the Docker engine?"
    if "http: server gave HTTP response to HTTPS client" in error:
        return (
            f"{error}. The registry speaks plain HTTP: add it to insecure-registries in the engine's "
            "daemon.json (127.0.0.0/8 is trusted by default)"
        )
    if "unauthorized" in error or "authentication required" in error:
        return f"{error}. Log the engine in first: docker login <registry>"
    return error
