"""Pushing images to a real registry on loopback (Debian's ``docker-registry``) and running them from it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.errors import ImageNotFound

from envs.docker_backend import DockerBackend
from images.base import BASE_IMAGE, MINBASE_IMAGE
from images.registry import RegistryError, parse_registry, pull, push, repository_for
from storage import Image, ImageStatus, Store
from tests.farm import answers, free_port

#: The registry's binary: Debian's package name, then the upstream one.
REGISTRY_BINARIES = ("docker-registry", "registry")


def test_registry_names_are_checked_and_tags_mapped() -> None:
    assert parse_registry("127.0.0.1:5000/forager/") == "127.0.0.1:5000/forager"
    assert parse_registry("Registry.Example.org/team/sub") == "registry.example.org/team/sub"
    assert parse_registry("localhost") == "localhost"
    for bad in ("http://127.0.0.1:5000/x", "noport", "127.0.0.1:5000/Bad Name", ""):
        with pytest.raises(RegistryError, match="HOST\\[:PORT\\]/PREFIX"):
            parse_registry(bad)
    assert repository_for("forager/attrs:1f2e", "r:1/p") == ("r:1/p/attrs", "1f2e")
    assert repository_for("other/x", "r:1") == ("r:1/other/x", "latest")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a registry of this module alone (its own port and storage folder)."""
    binary = next(filter(None, map(shutil.which, REGISTRY_BINARIES)), None)
    if binary is None:
        message = "no registry binary (apt-get install docker-registry; scripts/setup.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    server = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while not answers(f"http://127.0.0.1:{port}/v2/"):
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
        assert time.monotonic() < deadline, "the registry did not start"
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


@pytest.fixture
def small_image(docker_client, store: Store) -> Iterator[Image]:
    """A stored image: the smallest Debian image here plus a layer of its own, as a build would leave."""
    base = MINBASE_IMAGE if _exists(docker_client, MINBASE_IMAGE) else BASE_IMAGE
    tag = f"forager/registry-test-{uuid.uuid4().hex[:8]}:1"
    container = docker_client.containers.create(base, ["true"], network_mode="none")
    try:
        container.put_archive("/", _tar({"marker.txt": tag.encode()}))
        image_id = container.commit(*tag.split(":")).id
    finally:
        container.remove(force=True)
    repository = store.get_or_create_repository("/src/registry-test", "registry-test")
    image = store.save_image(
        Image(
            repository_id=repository.id, tag=tag, status=ImageStatus.READY, base_image=base, recipe={},
            recipe_hash="h",
        )
    )  # fmt: skip
    yield image
    for ref in [tag, *(_refs(docker_client, store.get_image(tag)))]:
        with contextlib.suppress(ImageNotFound):
            docker_client.images.remove(ref)
    # And every other name a push gave it (one to a dead registry is not recorded): its content is ours.
    with contextlib.suppress(ImageNotFound):
        docker_client.images.remove(image_id, force=True)


def _exists(client, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def _refs(client, image: Image) -> list[str]:
    """The registry names the engine holds for ``image`` (tag and digest forms)."""
    if not image.registry_ref:
        return []
    repository_tag, _, digest = image.registry_ref.partition("@")
    return [repository_tag, f"{repository_tag.rpartition(':')[0]}@{digest}"]


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.docker
def test_push_records_the_reference_sends_layers_once_and_the_reference_runs(
    docker_client, store: Store, registry: str, small_image: Image
) -> None:
    events = []
    first = push(docker_client, store, small_image, f"{registry}/team", progress=events.append)
    name = small_image.tag.removeprefix("forager/").split(":")[0]
    assert first.reference.startswith(f"{registry}/team/{name}:1@sha256:")
    assert first.layers_pushed >= 1
    assert store.get_image(small_image.tag).registry_ref == first.reference
    assert any(event.stage == "pushed" for event in events)
    with urllib.request.urlopen(f"http://{registry}/v2/team/{name}/tags/list") as answer:
        assert json.load(answer)["tags"] == ["1"]

    again = push(docker_client, store, small_image, f"{registry}/team")
    assert again.layers_pushed == 0, "the registry has every layer: none is sent again"
    assert again.layers_skipped == first.layers_pushed + first.layers_skipped
    assert again.reference == first.reference

    # Another machine: neither the local tag nor the registry's name is on its engine.
    for ref in [small_image.tag, again.reference.partition("@")[0]]:
        docker_client.images.remove(ref)
    stored = store.get_image(small_image.tag)
    assert pull(docker_client, store, stored) == small_image.tag
    backend = DockerBackend(docker_client)
    for ref in (stored.registry_ref, small_image.tag):
        with backend.start(ref, workdir="/") as env:
            assert env.read_file("/marker.txt") == small_image.tag.encode()


@pytest.mark.docker
def test_the_cli_pushes_and_a_dead_registry_is_one_clear_error(
    docker_client, store: Store, registry: str, small_image: Image, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'forager.db'}"
    run = [sys.executable, "-m", "forager", "--db", db, "--home", str(tmp_path / "home"), "images", "push"]
    done = subprocess.run(
        [*run, small_image.tag, "--registry", f"{registry}/cli", "--json"], capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["reference"] == store.get_image(small_image.tag).registry_ref
    shown = subprocess.run(
        [*run[:-1], "show", small_image.tag, "--json"], capture_output=True, text=True, timeout=60
    )
    assert json.loads(shown.stdout)["registry_ref"] == result["reference"]

    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match="Is the registry running"):
        push(docker_client, store, small_image, dead, attempts=1)
    done = subprocess.run([*run, "--registry", "https://x"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "error: invalid registry 'https://x'" in done.stderr
