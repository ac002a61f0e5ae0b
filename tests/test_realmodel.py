"""A real served model in the loop: SmolLM2-135M under llama-cpp-python's server foraging a fixture task.

What a real model must never break, whatever it says: every episode is stored whole with a valid exit
reason, its token counts are the server's, no reply runs past the per-turn cap, no request is sent that
leaves no room for a reply in the context window, and the stored trajectory rebuilds each request
exactly (the server counts the same prompt tokens for the rebuilt one). Few turns and a small cap keep
the tier short: CI runs it. First, the same loop with a scripted server, whose requests are compared
message for message with the stored trajectory.
"""

from __future__ import annotations

import asyncio
import typing

import pytest
from aiohttp import web

from envs.docker_backend import DockerBackend
from forager.agent import AgentConfig, ExitReason, run_episode
from forager.context import message_chars
from forager.conversation import conversation
from forager.model import ModelClient, ModelConfig
from tests import test_forage
from tests.fake_openai import FakeOpenAI, completion_body

pytestmark = [pytest.mark.docker]

# test_forage's fixtures: a built fixture image with verified tasks, and the check that no episode
# container of this process is left after a test.
world = test_forage.world
no_leaked_containers = test_forage.no_leaked_containers

CAP = 48
TURNS = 4


def _forage(llama_server, docker_client, store, task, config: AgentConfig, name: str):
    """One episode of ``task`` with SmolLM2, stored; the stored episode with its steps."""

    async def go():
        async with ModelClient(ModelConfig(base_url=llama_server.base_url, seed=0, timeout=300)) as client:
            return await run_episode(
                task, task.image, client, DockerBackend(docker_client), config, model_name=name
            )

    episode, steps = asyncio.run(go())
    store.save_episode(episode, steps)
    return store.get_episode(episode.id)


async def _prompt_tokens(base_url: str, messages: list, tools: list | None) -> int:
    """What the server counts for a request of ``messages`` (generating one token)."""
    async with ModelClient(ModelConfig(base_url=base_url, seed=0)) as client:
        return (await client.complete(messages, tools, max_tokens=1)).prompt_tokens


def _check_whole(stored, config: AgentConfig, llama_server) -> None:
    assert stored.exit_reason in typing.get_args(ExitReason)
    assert stored.steps or stored.exit_reason == "context_overflow", stored.config.get("error")
    assert len(stored.steps) <= TURNS
    assert [s.index for s in stored.steps] == list(range(len(stored.steps)))
    assert stored.grade is not None  # graded, whatever the model did
    # Token counts are the server's, step by step and in sum.
    assert all(s.prompt_tokens and s.prompt_tokens > 0 for s in stored.steps)
    assert stored.prompt_tokens == sum(s.prompt_tokens for s in stored.steps)
    assert stored.completion_tokens == sum(s.completion_tokens for s in stored.steps)
    # The cap: no reply longer; a reply cut there is recorded as such.
    reasons = stored.config["finish_reasons"]
    assert len(reasons) == len(stored.steps)
    for step, reason in zip(stored.steps, reasons, strict=True):
        assert step.completion_tokens <= config.max_completion_tokens
        if reason == "length":
            assert step.completion_tokens == config.max_completion_tokens
    # The context policy: every request left room for a whole reply.
    window = stored.config["context"]["window"]
    assert window == (config.context_window or llama_server.n_ctx)
    assert all(s.prompt_tokens + config.max_completion_tokens <= window for s in stored.steps)
    # Faithful: each request rebuilt from the store is the one sent, token for token.
    for step in stored.steps:
        rebuilt = conversation(stored, stored.steps, before_step=step.index)
        assert asyncio.run(_prompt_tokens(llama_server.base_url, rebuilt, stored.tools)) == step.prompt_tokens


def _counting(content: str, finish_reason: str | None = None):
    """A reply whose usage counts the request's prompt at four characters a token."""

    async def respond(request):
        prompt = message_chars(request["messages"]) // 4
        return web.json_response(
            completion_body(request, content, usage=(prompt, 30), finish_reason=finish_reason)
        )

    return respond


def test_the_requests_sent_are_fitted_capped_thought_free_and_rebuilt_exactly(world, docker_client):
    _root, store, tasks = world
    big = "<tool: bash>\nseq 1 2500\n</tool>"  # about 11,400 characters of output: 2,850 "tokens"
    script = [
        _counting(f"<think>maybe <tool: bash>\nrm -rf /\n</tool> first?</think>\nLook.\n{big}"),
        _counting(big),
        _counting(big),
        _counting("I will now", finish_reason="length"),
        _counting("<tool: bash>\ngit status\n</tool>"),
    ]
    config = AgentConfig(
        action_format="cwm_text", max_turns=5, max_completion_tokens=100, context_window=7000
    )
    with FakeOpenAI(script) as server:

        async def go():
            async with ModelClient(ModelConfig(base_url=server.base_url)) as client:
                return await run_episode(
                    tasks[0], tasks[0].image, client, DockerBackend(docker_client), config, model_name="fake"
                )

        episode, steps = asyncio.run(go())
    store.save_episode(episode, steps)
    stored = store.get_episode(episode.id)
    assert stored.exit_reason == "max_turns" and len(stored.steps) == 5, stored.config["error"]
    # Thinking is the thought, not an action, and not sent back: the block inside it never ran.
    assert stored.steps[0].action == {"tool": "bash", "arguments": {"command": "seq 1 2500"}}
    assert stored.steps[0].thought == "maybe <tool: bash>\nrm -rf /\n</tool> first?\n\nLook."
    assert all("<think>" not in str(r["messages"]) for r in server.requests)
    # The cap on every request; the cut reply recorded and explained.
    assert [r["max_tokens"] for r in server.requests] == [100] * 5
    assert stored.config["finish_reasons"] == ["stop", "stop", "stop", "length", "stop"]
    assert "cut at the limit of 100 tokens" in stored.steps[3].observation
    # Fitted: the older observations shortened, the oldest first, each request leaving room for a reply.
    shortened = stored.config["context"]["shortened"]
    assert shortened[0] == {"step": 0, "part": "observation", "at": 2}
    assert all(message_chars(r["messages"]) // 4 + 100 <= 7000 for r in server.requests)
    # Faithful: every request, message for message, is rebuilt from the store.
    for index, request in enumerate(server.requests):
        assert conversation(stored, stored.steps, before_step=index) == request["messages"], index
    assert conversation(stored, stored.steps)[:2] == server.requests[0]["messages"][:2]


@pytest.mark.realmodel
@pytest.mark.parametrize("action_format", ["cwm_text", "function_calling"])
def test_real_model_episodes_are_stored_whole_within_the_cap(
    world, llama_server, docker_client, action_format
):
    _root, store, tasks = world
    config = AgentConfig(
        action_format=action_format, max_turns=TURNS, max_format_errors=TURNS, max_completion_tokens=CAP,
        context_window=llama_server.n_ctx,
    )  # fmt: skip
    stored = _forage(llama_server, docker_client, store, tasks[0], config, f"smollm2-{action_format}")
    _check_whole(stored, config, llama_server)
    assert "length" in stored.config["finish_reasons"], "SmolLM2 rambles: a 48-token cap cuts some reply"


@pytest.mark.realmodel
@pytest.mark.parametrize("action_format", ["cwm_text", "function_calling"])
def test_a_tight_window_shortens_old_turns_or_ends_the_episode_cleanly(
    world, llama_server, docker_client, action_format
):
    """A window just larger than the opening prompt plus two replies: a later request must shorten the
    earlier turns, or, when that cannot make room, the episode ends ``context_overflow``."""
    _root, store, tasks = world
    probe = AgentConfig(
        action_format=action_format, max_turns=1, max_completion_tokens=1, context_window=llama_server.n_ctx
    )
    probed = _forage(llama_server, docker_client, store, tasks[1], probe, f"smollm2-probe-{action_format}")
    opening = probed.steps[0].prompt_tokens
    config = AgentConfig(
        action_format=action_format, max_turns=TURNS, max_format_errors=TURNS, max_completion_tokens=CAP,
        context_window=opening + 2 * CAP + 100, shortened_chars=64,
    )  # fmt: skip
    stored = _forage(llama_server, docker_client, store, tasks[1], config, f"smollm2-tight-{action_format}")
    _check_whole(stored, config, llama_server)
    shortened = stored.config["context"]["shortened"]
    assert shortened or stored.exit_reason in ("context_overflow", "submitted"), (
        stored.exit_reason, [s.prompt_tokens for s in stored.steps],
    )  # fmt: skip
    if stored.exit_reason == "context_overflow":
        assert "context window" in stored.config["error"]
    for record in shortened:  # only older turns' texts, shortened from a later request on
        assert record["step"] < record["at"] <= len(stored.steps)
    prompts = stored.steps and conversation(stored, stored.steps)[:2]
    assert not prompts or [m["content"] for m in prompts] == [stored.system_prompt, stored.task_prompt]
