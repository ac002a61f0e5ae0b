"""A cluster runs the image ``forager images push`` put in a registry, found through the store.

The pods of ``tests/k8s_server.py`` are real containers, and its "kubelet" pulls a missing image as a
real one would: here from the loopback registry of ``tests/test_registry.py``.
"""

from __future__ import annotations

import pytest

from core.errors import ForagerError
from envs.backend import make_backend
from images.registry import push
from storage import Image, Store
from tests.test_registry import registry, small_image  # noqa: F401 (fixtures)


@pytest.mark.docker
def test_a_pod_runs_the_pushed_reference_of_a_local_tag(
    docker_client, kubernetes, store: Store, registry: str, small_image: Image  # noqa: F811
) -> None:
    pushed = push(docker_client, store, small_image, f"{registry}/cluster")
    # Another machine's engine (the cluster's nodes): neither the tag nor the registry's name is there.
    for ref in (small_image.tag, pushed.reference.partition("@")[0]):
        docker_client.images.remove(ref)
    config = str(kubernetes.kubeconfig_path)

    without_store = make_backend("kubernetes", kubeconfig=config, start_timeout=30)
    try:
        with pytest.raises(ForagerError, match=f"cannot pull image {small_image.tag}.*forager images push"):
            without_store.start(small_image.tag, workdir="/")
    finally:
        without_store.close()

    backend = make_backend("kubernetes", store=store, kubeconfig=config, start_timeout=120)
    try:
        with backend.start(small_image.tag, workdir="/") as env:
            assert env.read_file("/marker.txt") == small_image.tag.encode()
    finally:
        backend.close()
