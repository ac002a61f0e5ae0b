"""What queue drills and the queue benchmark share: a database of their own, verified tasks, the oracle
served over loopback, and telling their own containers from other work on the engine."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from envs.backend import EPISODE_LABEL
from envs.docker_backend import DockerBackend
from envs.mutate_fix import MutateOptions, generate
from images.builder import BuildOptions, ImageBuilder
from images.engine import OWNER_LABEL
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import ImageStatus, Store
from tests.repos import make_repo, python_project

#: The ``forager`` command, as a user runs it.
FORAGER = [sys.executable, "-m", "forager"]


@contextmanager
def private_database(postgres_url: str, prefix: str = "forager_queue") -> Iterator[str]:
    """The URL of a new database on the server of ``postgres_url``, dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` (any status but a failure to connect)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s in vain")
        time.sleep(0.05)


def containers_of(docker_client, pids: list[int]) -> list[str]:
    """Ids of the episode containers the processes ``pids`` of this host made.

    Read from one listing, without inspecting each container (which may be gone by then)."""
    prefixes = tuple(f"{socket.gethostname()}:{pid}:" for pid in pids)
    return [
        c["Id"]
        for c in docker_client.api.containers(all=True, filters={"label": EPISODE_LABEL})
        if (c.get("Labels") or {}).get(OWNER_LABEL, "").startswith(prefixes)
    ]


def build_fixture_tasks(docker_client, store: Store, root: Path, *, max_tasks: int) -> str:
    """Build the fixture repository's image into ``store`` and make mutate-fix tasks in it; its tag."""
    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=900)
    make_repo(root / "calc", python_project())
    builder = ImageBuilder(docker_client, store, root / "home", options)
    for _ in range(3):  # the image is not the subject: a build another test's gc broke is redone
        built = builder.build(parse_source(str(root / "calc")))
        if built.status == ImageStatus.READY and built.tag is not None:
            break
    else:
        raise AssertionError(f"the fixture image did not build: {built.reason}")
    image = store.get_image(built.tag)
    options = MutateOptions(max_tasks=max_tasks, seed=3)
    generate(DockerBackend(docker_client), store, image, options, cache_dir=root / "cache")
    return built.tag


def serve_oracle(db_url: str, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``forager serve oracle`` on a free loopback port: the process, and its base URL once it answers."""
    port = free_port()
    command = [*FORAGER, "--db", db_url, "--home", str(home), "serve", "oracle", "--port", str(port)]
    oracle = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model = f"http://127.0.0.1:{port}/v1"
    wait_for(lambda: answers(f"{model}/models"), 60)
    return oracle, model
