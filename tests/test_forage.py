"""Episodes end to end: the oracle policy over HTTP foraging real tasks, faults, the Python API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from envs.backend import EPISODE_LABEL
from envs.docker_backend import DockerBackend
from envs.mutate_fix import MutateOptions, generate
from forager import Episode
from forager.agent import AgentConfig, run_episode
from forager.model import ModelClient, ModelConfig
from forager.pipeline import forage
from forager.policies.oracle import oracle_app
from forager.policies.server import start_in_thread
from images.builder import BuildOptions, ImageBuilder
from images.engine import owner_labels
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import EpisodeFilter, ImageStatus, Store
from tests.fake_openai import FakeOpenAI, context_overflow, malformed_tool_call, reply, status, tool_call
from tests.repos import make_repo, python_project

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def world(docker_client, tmp_path_factory):
    """A store with a built fixture image and a few verified mutate-fix tasks."""
    root = tmp_path_factory.mktemp("forage")
    store = Store(f"sqlite:///{root / 'forager.db'}")
    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=600)
    builder = ImageBuilder(docker_client, store, root / "home", options)
    make_repo(root / "calc", python_project())
    built = builder.build(parse_source(str(root / "calc")))
    assert built.status == ImageStatus.READY, built.reason
    image = store.get_image(built.tag)
    generate(
        DockerBackend(docker_client),
        store,
        image,
        MutateOptions(max_tasks=3, seed=3),
        cache_dir=root / "cache",
    )
    tasks = store.list_tasks()
    assert len(tasks) >= 2
    yield root, store, tasks
    store.close()
    docker_client.images.remove(built.tag, force=True)


@pytest.fixture(autouse=True)
def no_leaked_containers(docker_client):
    """Every test ends with no episode container of its own left: those this process owns (other
    processes on the engine, such as parallel test runs, own theirs)."""
    ours = {"label": [EPISODE_LABEL, "=".join(next(iter(owner_labels().items())))]}
    before = {c.id for c in docker_client.containers.list(all=True, filters=ours)}
    yield
    after = {c.id for c in docker_client.containers.list(all=True, filters=ours)}
    assert not after - before, "episode containers leaked"


@pytest.mark.parametrize("action_format", ["function_calling", "cwm_text"])
def test_oracle_episodes_are_foraged_resolved_and_stored(world, docker_client, action_format):
    _root, store, tasks = world
    base_url, stop = start_in_thread(oracle_app(store))
    try:

        async def go():
            async with ModelClient(ModelConfig(base_url=base_url)) as client:
                config = AgentConfig(action_format=action_format)
                first = await forage(
                    store,
                    tasks,
                    client,
                    DockerBackend(docker_client),
                    config,
                    model_name="oracle",
                    concurrency=2,
                )
                again = await forage(
                    store,
                    tasks,
                    client,
                    DockerBackend(docker_client),
                    config,
                    model_name="oracle",
                    concurrency=2,
                )
                return first, again

        first, again = asyncio.run(go())
    finally:
        stop()
    unresolved = [
        (e.exit_reason, [(s.action, s.observation[:300]) for s in store.get_episode(e.id).steps[:7]])
        for e in store.iter_episodes(
            EpisodeFilter(model="oracle", resolved=False, action_format=action_format), with_steps=False
        )
    ]
    assert (first.episodes, first.resolved, first.failed) == (len(tasks), len(tasks), 0), unresolved
    assert first.exit_reasons == {"submitted": len(tasks)}
    assert (again.episodes, again.skipped) == (0, len(tasks)), "a re-run skips what is done"
    for task in tasks:
        (episode,) = store.list_episodes(EpisodeFilter(task_id=task.id, action_format=action_format))
        stored = store.get_episode(episode.id)
        assert stored.resolved and stored.reward == 1.0 and stored.exit_reason == "submitted"
        assert stored.steps[-1].action == {"tool": "submit", "arguments": {}}
        assert any(s.action.get("tool") == "edit" for s in stored.steps if isinstance(s.action, dict))
        assert stored.final_patch and stored.grade["status"] == "resolved"


def test_faults_retried_and_clean_failures_lose_nothing(world, docker_client):
    _root, store, tasks = world
    task = tasks[0]
    bash = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "bash", "arguments": json.dumps({"command": "ls"})},
    }
    script = [
        status(429, retry_after=1),
        status(500),
        reply(tool_calls=[bash], usage=(100, 10)),
        malformed_tool_call(),
        malformed_tool_call(),
        malformed_tool_call(),
    ]
    with FakeOpenAI(script) as server:

        async def go(config):
            async with ModelClient(
                ModelConfig(base_url=server.base_url, model="fake", backoff=0.01)
            ) as client:
                return await run_episode(
                    task, task.image, client, DockerBackend(docker_client), config, model_name="fake"
                )

        episode, steps = asyncio.run(go(AgentConfig(max_format_errors=3)))
    assert episode.exit_reason == "format_errors" and len(steps) == 4
    assert steps[0].action == {"tool": "bash", "arguments": {"command": "ls"}}
    assert "src" in steps[0].observation
    assert episode.prompt_tokens >= 100
    store.save_episode(episode, steps)
    assert store.get_episode(episode.id).n_steps == 4

    with FakeOpenAI([context_overflow("vllm")]) as server:
        episode, steps = asyncio.run(go(AgentConfig()))
    assert episode.exit_reason == "context_overflow" and steps == []
    assert len(server.requests) == 1, "a context overflow is not retried"

    async def dead():
        config = ModelConfig(base_url="http://127.0.0.1:9/v1", model="x", max_retries=1, backoff=0.01)
        async with ModelClient(config) as client:
            return await run_episode(
                task, task.image, client, DockerBackend(docker_client), AgentConfig(), model_name="x"
            )

    episode, steps = asyncio.run(dead())
    assert episode.exit_reason == "model_error" and episode.status == "failed"


def test_committed_work_counts_every_call_is_answered_and_a_broken_repository_is_survived(
    world, docker_client
):
    _root, _store, tasks = world
    task = tasks[0]
    fix = f"git apply <<'FORAGER_PATCH' && git commit -qam fix\n{task.gold_patch}FORAGER_PATCH"
    script = [
        reply(
            tool_calls=[
                tool_call("bash", '{"command": "ls', id="a"),
                tool_call("bash", {"command": "ls"}, id="b"),
            ]
        ),
        reply(tool_calls=[tool_call("bash", {"command": fix})]),
        reply(tool_calls=[tool_call("submit", {})]),
    ]

    async def go(server, config):
        async with ModelClient(ModelConfig(base_url=server.base_url, model="fake", backoff=0.01)) as client:
            return await run_episode(
                task, task.image, client, DockerBackend(docker_client), config, model_name="fake"
            )

    with FakeOpenAI(script) as server:
        episode, steps = asyncio.run(go(server, AgentConfig()))
        answered = [m["tool_call_id"] for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert answered == ["a", "b"], "OpenAI refuses a conversation with an unanswered tool call"
    assert episode.exit_reason == "submitted" and episode.resolved, "the fix was committed, and still counts"
    assert "+++ b/" in episode.final_patch

    script = [
        reply(tool_calls=[tool_call("bash", {"command": "rm -rf .git"})]),
        reply(tool_calls=[tool_call("submit", {})]),
    ]
    with FakeOpenAI(script) as server:
        episode, steps = asyncio.run(go(server, AgentConfig(max_turns=2)))
    assert steps[1].observation.startswith("Cannot submit: the repository's changes cannot be read.")
    assert (episode.exit_reason, episode.resolved) == ("max_turns", False)


def test_python_api_steps_injects_and_closes(world, docker_client):
    root, store, tasks = world
    base_url, stop = start_in_thread(oracle_app(store))
    try:
        episode = Episode.from_task(
            tasks[0].instance_id, model=base_url, format="cwm_text", db=store_url(root)
        )
        try:
            first = episode.step()
            assert first.index == 0 and first.action["tool"] == "bash"
            mine = episode.act("bash", command="echo injected")
            assert mine.observation.startswith("injected")
            assert episode.shell("pwd").output.strip() == "/repo"
            assert episode.container is not None
            records = list(episode.steps())
            assert episode.exit_reason == "submitted" and records[-1].action["tool"] == "submit"
            stored, steps = episode.finish()
            assert stored.resolved and len(steps) == len(records) + 2
        finally:
            episode.close()
    finally:
        stop()


def test_cli_episode_show_and_replay_reproduce_a_stored_episode(world, docker_client):
    root, store, tasks = world
    base_url, stop = start_in_thread(oracle_app(store))
    try:

        async def go():
            async with ModelClient(ModelConfig(base_url=base_url)) as client:
                config = AgentConfig(action_format="cwm_text")
                return await run_episode(
                    tasks[0],
                    tasks[0].image,
                    client,
                    DockerBackend(docker_client),
                    config,
                    model_name="oracle",
                )

        episode, steps = asyncio.run(go())
    finally:
        stop()
    store.save_episode(episode, steps)
    cli = [sys.executable, "-m", "forager", "--db", store_url(root)]
    shown = subprocess.run([*cli, "episode", "show", episode.id, "--json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["steps"]
    replayed = subprocess.run([*cli, "episode", "replay", episode.id], capture_output=True, text=True)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "observations reproduced" in replayed.stdout


def store_url(root: Path) -> str:
    return f"sqlite:///{root / 'forager.db'}"


def test_cli_forage_from_a_source_builds_mutates_and_forages(docker_client, tmp_path):
    make_repo(tmp_path / "calc", python_project())
    url = f"sqlite:///{tmp_path / 'home' / 'forager.db'}"
    store = Store(url)
    base_url, stop = start_in_thread(oracle_app(store))
    try:
        command = [sys.executable, "-m", "forager", "--home", str(tmp_path / "home"), "forage"]
        options = [
            "--model",
            base_url,
            "--source",
            str(tmp_path / "calc"),
            "--tasks-per-image",
            "2",
            "--json",
        ]
        done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=600)
    finally:
        stop()
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["episodes"] >= 1 and summary["resolved"] == summary["episodes"]
    for image in store.list_images():
        docker_client.images.remove(image.tag, force=True)
    store.close()
