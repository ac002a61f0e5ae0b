"""The conversation rebuilt from the store is exactly the one the model saw, in both action formats."""

from __future__ import annotations

import asyncio

import pytest

from envs.backend import EPISODE_LABEL
from envs.docker_backend import DockerBackend
from forager.agent import AgentConfig, EpisodeRun
from forager.conversation import NOT_EXECUTED, conversation
from forager.model import ModelClient, ModelConfig
from storage import Episode, Step
from tests.fake_openai import FakeOpenAI, malformed_tool_call, reply, tool_call
from tests.test_forage import world  # noqa: F401 (a fixture)

pytestmark = pytest.mark.docker

# Every kind of turn: text besides the call, extra calls (answered "not executed"), argument text that
# json.dumps would not write back (spacing), malformed arguments, no call at all, a change, submit.
FUNCTION_CALLING = [
    reply(
        "Looking around first.",
        tool_calls=[
            tool_call("bash", {"command": "ls"}, id="call_a"),
            tool_call("bash", {"command": "pwd"}, id="call_b"),
        ],
        usage=(120, 12),
    ),
    malformed_tool_call(),
    reply(
        tool_calls=[tool_call("bash", '{ "command" :  "echo hi > notes.txt"}', id="call_c")], usage=(300, 9)
    ),
    reply("I think I am done, no tool needed."),
    reply(tool_calls=[tool_call("submit", {}, id="call_d")]),
]
CWM_TEXT = [
    reply("I will look.\n<tool: bash>\nls\n</tool>", reasoning="thinking hard", usage=(90, 20)),
    reply("no tool block here"),
    reply("<tool: bash>\necho 'ünïcödé' > notes.txt\n</tool>"),
    reply("<tool: submit>\n</tool>"),
]


@pytest.mark.parametrize(
    ("action_format", "script"), [("function_calling", FUNCTION_CALLING), ("cwm_text", CWM_TEXT)]
)
def test_the_stored_conversation_is_the_one_the_model_saw(world, docker_client, action_format, script):  # noqa: F811
    _root, store, tasks = world
    task = tasks[0]
    with FakeOpenAI(script) as server:

        async def go() -> EpisodeRun:
            async with ModelClient(
                ModelConfig(base_url=server.base_url, model="fake", max_retries=0)
            ) as client:
                config = AgentConfig(action_format=action_format)
                run = EpisodeRun(
                    task, task.image, client, DockerBackend(docker_client), config, model_name="fake"
                )
                try:
                    episode, steps = await run.play()
                finally:
                    await asyncio.to_thread(run.close)
                store.save_episode(episode, steps)
                return run

        run = asyncio.run(go())
    assert run.exit_reason == "submitted" and len(run.steps) == len(script)
    for name in (run.id, f"{run.id}-grade"):
        assert not docker_client.containers.list(all=True, filters={"label": f"{EPISODE_LABEL}={name}"})

    stored = store.get_episode(run.id)
    rebuilt = conversation(stored, stored.steps)
    assert rebuilt == run.messages
    # What the server received at each turn, decoded from the HTTP body, is a prefix of it.
    for request in server.requests:
        assert rebuilt[: len(request["messages"])] == request["messages"]
        assert stored.tools == request.get("tools")
    if action_format == "function_calling":
        assert {"role": "tool", "tool_call_id": "call_b", "content": NOT_EXECUTED} in rebuilt
        assert (
            stored.steps[2].message["tool_calls"][0]["function"]["arguments"]
            == '{ "command" :  "echo hi > notes.txt"}'
        )
        assert stored.tools and stored.tools[0]["type"] == "function"
    else:
        assert stored.tools is None
        assert "reasoning_content" not in stored.steps[0].message  # not part of the conversation
    assert (stored.system_prompt, stored.task_prompt) == (
        run.messages[0]["content"],
        run.messages[1]["content"],
    )
    assert "system_prompt" not in stored.config


def test_steps_stored_before_messages_were_recorded_get_a_faithful_rebuild() -> None:
    episode = Episode(action_format="function_calling", system_prompt="sys", task_prompt="task")
    steps = [
        Step(index=1, thought=None, action="{broken", observation="Invalid JSON"),
        Step(
            index=0, thought="look", action={"tool": "bash", "arguments": {"command": "ls"}}, observation="a"
        ),
    ]
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": "bash", "arguments": '{"command": "ls"}'},
    }
    assert conversation(episode, steps) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": "look", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": "a"},
        {"role": "assistant", "content": "{broken"},
        {"role": "user", "content": "Invalid JSON"},
    ]
    cwm = Episode(action_format="cwm_text", system_prompt="sys", task_prompt="task")
    assert conversation(cwm, steps[1:])[2:] == [
        {"role": "assistant", "content": "look\n<tool: bash>\nls\n</tool>"},
        {"role": "user", "content": "a"},
    ]
