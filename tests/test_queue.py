"""The work queue: leases on SQLite and PostgreSQL, many claimers at once, and `forager worker` drills."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from envs.backend import Limits
from images.engine import OWNER_LABEL, owner_labels
from storage import Episode, EpisodeStatus, Image, ImageStatus, Lease, Store, StoreError, Task, TaskKind
from storage.models import WorkState
from tests.farm import FORAGER, build_fixture_tasks, containers_of, private_database, serve_oracle, wait_for

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture
def private_postgres(postgres_url: str) -> Iterator[str]:
    with private_database(postgres_url) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'forager.db'}"
    else:
        yield request.getfixturevalue("private_postgres")


@pytest.fixture
def queue(db_url: str) -> Iterator[Store]:
    with Store(db_url) as store:
        yield store


def make_tasks(store: Store, n: int, tag: str = "forager/calc:1") -> list[Task]:
    repository = store.get_or_create_repository("/src/calc", "calc")
    image = store.save_image(
        Image(
            repository_id=repository.id, tag=tag, status=ImageStatus.READY, base_image="base",
            recipe={}, recipe_hash="h",
        )
    )  # fmt: skip
    tasks = [
        Task(instance_id=f"{tag}-{i}", kind=TaskKind.MUTATE_FIX, image_id=image.id, problem_statement="Fix.")
        for i in range(n)
    ]
    return store.add_tasks(tasks)


def episode_for(lease: Lease, exit_reason: str = "submitted") -> Episode:
    now = datetime.now(UTC)
    return Episode(
        task_id=lease.task_id, model="m", action_format=lease.action_format, status=EpisodeStatus.COMPLETED,
        exit_reason=exit_reason, started_at=now, finished_at=now,
    )  # fmt: skip


# ---- the store's queue ---------------------------------------------------------------------------------


def test_enqueue_adds_only_what_is_missing(queue: Store) -> None:
    tasks = make_tasks(queue, 3)
    ids = [t.id for t in tasks]
    assert queue.enqueue(ids, action_format="function_calling", episodes_per_task=2) == 6
    assert queue.enqueue(ids, action_format="function_calling", episodes_per_task=3) == 3
    assert queue.enqueue(ids, action_format="cwm_text") == 3
    assert queue.queue_counts().queued == 12
    assert queue.next_images(2) == ["forager/calc:1"] * 2


def test_a_lease_completes_once_with_one_episode(queue: Store) -> None:
    (task,) = make_tasks(queue, 1)
    queue.enqueue([task.id], action_format="function_calling", config={"max_turns": 7})
    lease = queue.claim("w1", lease_seconds=60)
    assert lease is not None and lease.config == {"max_turns": 7} and lease.image_tag == "forager/calc:1"
    assert queue.claim("w2", lease_seconds=60) is None, "a leased item is nobody else's"
    assert queue.heartbeat(lease, lease_seconds=60) is not None
    episode = episode_for(lease)
    assert queue.complete(lease, episode, [])
    assert not queue.complete(lease, episode_for(lease), []), "a completed item takes no second episode"
    (item,) = queue.list_work()
    assert (item.state, item.episode_id, item.attempts) == (WorkState.DONE, episode.id, 1)
    assert queue.get_episode(episode.id).work_item_id == item.id
    assert queue.count_episodes() == 1
    assert queue.heartbeat(lease, lease_seconds=60) is None


def test_an_expired_lease_is_claimed_again_and_the_stale_worker_is_refused(queue: Store) -> None:
    (task,) = make_tasks(queue, 1)
    queue.enqueue([task.id], action_format="function_calling", max_attempts=2)
    stale = queue.claim("dead", lease_seconds=3)
    assert stale is not None
    assert queue.claim("alive", lease_seconds=60) is None, "not before the lease expires"
    time.sleep(3.2)
    fresh = queue.claim("alive", lease_seconds=60)
    assert fresh is not None and fresh.item_id == stale.item_id and fresh.claim == 2 and fresh.last_attempt
    assert queue.heartbeat(stale, lease_seconds=60) is None, "the presumed-dead worker lost its lease"
    assert not queue.complete(stale, episode_for(stale), []), "the presumed-dead worker came back"
    assert queue.count_episodes() == 0, "and stored nothing"
    assert queue.complete(fresh, episode_for(fresh), [])
    assert queue.count_episodes() == 1


def test_the_same_owner_claiming_again_holds_a_new_lease(queue: Store) -> None:
    (task,) = make_tasks(queue, 1)
    queue.enqueue([task.id], action_format="function_calling")
    first = queue.claim("w", lease_seconds=0.1)
    time.sleep(0.3)
    second = queue.claim("w", lease_seconds=60)
    assert second is not None and second.claim == 2
    assert not queue.complete(first, episode_for(first), []), "a lease is one claim, not one owner"


def test_leases_that_keep_expiring_fail_the_item(queue: Store) -> None:
    (task,) = make_tasks(queue, 1)
    queue.enqueue([task.id], action_format="function_calling", max_attempts=2)
    for _ in range(2):
        assert queue.claim("dies", lease_seconds=0.1) is not None
        time.sleep(0.3)
    assert queue.claim("next", lease_seconds=60) is None
    (item,) = queue.list_work()
    assert item.state == WorkState.FAILED and "expired" in item.error and item.lease_owner is None


def test_release_gives_the_item_back_and_counted_releases_are_bounded(queue: Store) -> None:
    (task,) = make_tasks(queue, 1)
    queue.enqueue([task.id], action_format="function_calling", max_attempts=2)
    lease = queue.claim("w", lease_seconds=60)
    assert queue.release(lease)
    (item,) = queue.list_work()
    assert (item.state, item.attempts) == (WorkState.QUEUED, 0), "a shutdown does not use up an attempt"
    for expected in (WorkState.QUEUED, WorkState.FAILED):
        lease = queue.claim("w", lease_seconds=60)
        assert queue.release(lease, counted=True, error="infra_error")
        assert queue.list_work()[0].state == expected
    assert not queue.release(lease)


def test_claims_filter_by_format(queue: Store) -> None:
    (task,) = make_tasks(queue, 1)
    queue.enqueue([task.id], action_format="cwm_text")
    assert queue.claim("w", lease_seconds=60, action_format="function_calling") is None
    assert queue.claim("w", lease_seconds=60, action_format="cwm_text") is not None


def test_the_schema_refuses_a_second_episode_of_an_item(queue: Store) -> None:
    (task,) = make_tasks(queue, 1)
    queue.enqueue([task.id], action_format="function_calling")
    lease = queue.claim("w", lease_seconds=60)
    assert queue.complete(lease, episode_for(lease), [])
    sneaked = episode_for(lease)
    sneaked.work_item_id = lease.item_id
    with pytest.raises(StoreError, match="rejected"):
        queue.save_episode(sneaked, [])


def test_an_item_carries_the_episode_config_it_was_enqueued_with(queue: Store) -> None:
    from forager.agent import AgentConfig
    from forager.prompts import Prompts
    from forager.worker import agent_config, item_config

    (task,) = make_tasks(queue, 1)
    custom = AgentConfig(
        action_format="cwm_text", max_turns=7, wall_clock=99.0, prompts=Prompts("S ${workdir}", "T")
    )
    for config in (custom, AgentConfig()):
        queue.enqueue([task.id], action_format=config.action_format, config=item_config(config))
        lease = queue.claim("w", lease_seconds=60, action_format=config.action_format)
        assert agent_config(lease) == config
    assert "prompts" not in item_config(AgentConfig()), "the packaged prompts are not copied into items"


def _claim_all(url: str, owner: str, results: multiprocessing.Queue) -> None:
    claimed = []
    with Store(url) as store:
        while (lease := store.claim(owner, lease_seconds=60)) is not None:
            now = datetime.now(UTC)
            episode = Episode(
                task_id=lease.task_id, model="m", action_format=lease.action_format, started_at=now,
                finished_at=now, status=EpisodeStatus.COMPLETED, exit_reason="submitted",
            )  # fmt: skip
            assert store.complete(lease, episode, [])
            claimed.append(lease.item_id)
    results.put(claimed)


def test_concurrent_claimers_take_every_item_exactly_once(db_url: str) -> None:
    with Store(db_url) as store:
        tasks = make_tasks(store, 60)
        store.enqueue([t.id for t in tasks], action_format="function_calling")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_claim_all, args=(db_url, f"w{i}", results)) for i in range(4)]
    for worker in workers:
        worker.start()
    claimed = [item for _ in workers for item in results.get(timeout=120)]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert len(claimed) == 60 and len(set(claimed)) == 60
    with Store(db_url) as store:
        assert store.queue_counts().done == 60 and store.count_episodes() == 60


# ---- the warm pool -------------------------------------------------------------------------------------


@pytest.mark.docker
def test_the_warm_pool_hands_out_started_environments_once_and_removes_the_rest(docker_client) -> None:
    from envs.docker_backend import DockerBackend
    from envs.pool import WarmPool
    from images.base import BASE_IMAGE

    mine = {"label": f"{OWNER_LABEL}={owner_labels()[OWNER_LABEL]}"}
    with WarmPool(DockerBackend(docker_client), 2) as pool:
        pool.want([BASE_IMAGE, BASE_IMAGE])
        wait_for(lambda: len(pool._ready) == 2, 120)
        ids = set()
        for _ in range(3):
            with pool.start(BASE_IMAGE) as env:
                assert env.run("echo hi").output.strip() == "hi"
                ids.add(env.container.id)
        assert len(ids) == 3, "a pooled environment serves one episode only"
        assert pool.hits >= 2
        with pool.start(BASE_IMAGE, limits=Limits(memory="1g")) as env:
            assert env.container.id not in ids, "a start the pool does not fit is started fresh"
        pool.want([])
        wait_for(lambda: not pool._ready, 60)
        pool.want([BASE_IMAGE])
        wait_for(lambda: len(pool._ready) == 1, 120)
    assert not docker_client.containers.list(all=True, filters=mine), "closing the pool removes its own"


# ---- drills: `forager worker` processes on PostgreSQL ----------------------------------------------------


@pytest.fixture(scope="module")
def farm(docker_client, postgres_url, tmp_path_factory):
    """A private PostgreSQL store with a built fixture image and verified tasks, and the oracle serving
    them over HTTP from its own `forager serve oracle` process."""
    root = tmp_path_factory.mktemp("farm")
    with private_database(postgres_url) as url, Store(url) as store:
        tag = build_fixture_tasks(docker_client, store, root, max_tasks=3)
        tasks = store.list_tasks(status="verified")
        assert len(tasks) >= 2
        oracle, model = serve_oracle(url, root / "home")
        try:
            yield Farm(root, url, store, tasks, model)
        finally:
            oracle.terminate()
            oracle.wait(30)
            docker_client.images.remove(tag, force=True)


class Farm:
    def __init__(self, root: Path, url: str, store: Store, tasks: list[Task], model: str) -> None:
        self.root, self.url, self.store, self.tasks, self.model = root, url, store, tasks, model

    def forager(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FORAGER, "--db", self.url, "--home", str(self.root / "home"), *args],
            capture_output=True, text=True, timeout=timeout, env=_environment(),
        )  # fmt: skip

    def worker(self, *args: str) -> subprocess.Popen[str]:
        command = ["worker", "--model", self.model, "--poll", "0.5", *args]
        return subprocess.Popen(
            [*FORAGER, "--db", self.url, "--home", str(self.root / "home"), *command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
        )  # fmt: skip

    def enqueue(self, episodes_per_task: int) -> None:
        tasks = [arg for task in self.tasks for arg in ("--task", task.instance_id)]
        done = self.forager("forage", *tasks, "--episodes-per-task", str(episodes_per_task), "--enqueue")
        assert done.returncode == 0, done.stderr


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("FORAGER_DB", "FORAGER_HOME", "FORAGER_BACKEND")}


def _finish(workers: list[subprocess.Popen[str]], timeout: float = 900) -> list[str]:
    logs = []
    for worker in workers:
        _out, err = worker.communicate(timeout=timeout)
        assert worker.returncode == 0, err[-3000:]
        logs.append(err)
    return logs


def _check_every_item_done_once(store: Store) -> None:
    items = store.list_work()
    assert items and all(item.state == WorkState.DONE for item in items), [repr(i) for i in items]
    episodes = list(store.iter_episodes(with_steps=True))
    assert len(episodes) == len(items), "one episode per item, no more"
    assert sorted(e.work_item_id for e in episodes) == sorted(item.id for item in items)
    assert {e.id for e in episodes} == {item.episode_id for item in items}
    for episode in episodes:
        assert episode.exit_reason == "submitted" and episode.resolved, episode
        assert episode.n_steps == len(episode.steps) > 0, "no partial episode"


@pytest.mark.docker
@pytest.mark.postgres
def test_four_workers_run_every_item_exactly_once(farm: Farm, docker_client) -> None:
    farm.enqueue(episodes_per_task=3)
    expected = 3 * len(farm.tasks)
    assert farm.store.queue_counts().queued == expected
    # Two of them with a warm pool: its environments are the workers' own, removed when they exit.
    workers = [farm.worker("--until-empty", "--lease", "20", "--warm", str(i % 2)) for i in range(4)]
    logs = _finish(workers)
    _check_every_item_done_once(farm.store)
    assert sum("claimed" in log for log in logs) >= 2, "the work was shared"
    assert not containers_of(docker_client, [w.pid for w in workers])
    task = farm.tasks[0].instance_id
    again = farm.forager("forage", "--task", task, "--episodes-per-task", "3", "--enqueue")
    assert again.returncode == 0 and "0 episodes queued" in again.stdout, "enqueueing again adds nothing"


@pytest.mark.docker
@pytest.mark.postgres
def test_a_worker_killed_mid_episode_leaves_its_item_to_another(farm: Farm, docker_client) -> None:
    farm.enqueue(episodes_per_task=4)  # one more episode per task than the previous drill
    victim = farm.worker("--lease", "6")
    wait_for(lambda: containers_of(docker_client, [victim.pid]), 120)
    (held,) = farm.store.list_work(WorkState.LEASED)
    victim.kill()
    victim.wait()
    # Narrowed to the victim's: other tests leak containers of exited owners on purpose.
    leaked = map(docker_client.containers.get, containers_of(docker_client, [victim.pid]))
    (owner,) = {container.labels[OWNER_LABEL] for container in leaked}
    gc = farm.forager("envs", "gc", "--label", f"{OWNER_LABEL}={owner}")
    assert gc.returncode == 0, gc.stderr
    assert not containers_of(docker_client, [victim.pid]), "gc removes the killed worker's containers"
    survivor = farm.worker("--until-empty", "--lease", "20")
    _finish([survivor])
    _check_every_item_done_once(farm.store)
    item = next(i for i in farm.store.list_work() if i.id == held.id)
    assert item.attempts == 2, "claimed again once its lease expired"
    assert not containers_of(docker_client, [victim.pid, survivor.pid])


@pytest.mark.docker
@pytest.mark.postgres
def test_a_worker_presumed_dead_that_comes_back_stores_nothing(farm: Farm, docker_client) -> None:
    farm.enqueue(episodes_per_task=5)
    sleeper = farm.worker("--lease", "3")
    wait_for(lambda: containers_of(docker_client, [sleeper.pid]), 120)
    os.kill(sleeper.pid, signal.SIGSTOP)  # frozen past its lease: it can neither heartbeat nor finish
    try:
        rival = farm.worker("--until-empty", "--lease", "20")
        _finish([rival])
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
    time.sleep(3)  # it wakes up, finds its lease gone, and finishes nothing
    sleeper.send_signal(signal.SIGTERM)
    _out, err = sleeper.communicate(timeout=120)
    assert sleeper.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "lease lost" in err, err[-3000:]
    _check_every_item_done_once(farm.store)
    assert not containers_of(docker_client, [sleeper.pid, rival.pid])
