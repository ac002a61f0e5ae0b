"""Fitting the conversation to the context window, reasoning kept apart from actions, the per-turn cap."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web

from forager.context import KEEP_CHARS, PromptSize, candidates, fit, message_chars, shorten, shorten_thought
from forager.conversation import build_messages, conversation
from forager.model import ModelClient, ModelConfig
from forager.reasoning import sent_back, split_inline
from storage import Episode, Step
from tests.fake_openai import FakeOpenAI, reply

# -- reasoning ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "thinking", "answer"),
    [
        ("<think>plan it</think>\nls it", "plan it", "ls it"),
        ("plan it</think>ls it", "plan it", "ls it"),  # the template opened the block in the prompt
        ("before <think>cut at the cap <tool: bash>\nrm -rf /\n</tool>", "cut at the cap <tool: bash>\nrm -rf /\n</tool>", "before "),  # noqa: E501
        ("<think>a</think>x<think>b</think>y", "a\n\nb", "xy"),
        ("no thinking at all", None, "no thinking at all"),
        (None, None, ""),
    ],
)
def test_inline_thinking_is_told_apart_from_the_answer(content, thinking, answer):
    assert split_inline(content) == (thinking, answer)


def test_thinking_is_sent_back_or_dropped_as_the_policy_says():
    raw = {
        "role": "assistant",
        "content": "<think>why</think>the answer",
        "reasoning_content": "field thinking",
        "refusal": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{}"}}],
    }
    kept = sent_back(raw, "keep")
    assert kept == {k: raw[k] for k in ("role", "content", "tool_calls", "reasoning_content")}
    dropped = sent_back(raw, "drop")
    assert dropped == {"role": "assistant", "content": "the answer", "tool_calls": raw["tool_calls"]}


# -- shortening and its policy ------------------------------------------------------------------------


def test_a_shortened_text_keeps_head_and_tail_and_says_what_went():
    text = "H" * 1000 + "T" * 1000
    short = shorten(text, 100)
    assert short.startswith("H" * 50) and short.endswith("T" * 50)
    assert "1900 characters elided to fit the context window" in short
    assert shorten("small", 100) == "small"


def test_a_cwm_thought_is_shortened_but_its_tool_block_stays_whole():
    block = "<tool: bash>\n" + "x" * 3000 + "\n</tool>"
    message = {"role": "assistant", "content": "y" * 3000 + "\n" + block}
    short = shorten_thought(message, "cwm_text", 100)["content"]
    assert short.endswith(block) and len(short) < len(block) + 200
    called = {"role": "assistant", "content": "z" * 3000, "tool_calls": [{"id": "c"}]}
    assert shorten_thought(called, "function_calling", 100)["tool_calls"] == [{"id": "c"}]


def test_the_policy_shortens_older_observations_first_then_older_thoughts_then_the_latest():
    assert candidates(3) == [
        (0, "observation"), (1, "observation"), (0, "thought"), (1, "thought"), (2, "observation"),
    ]  # fmt: skip
    assert candidates(0) == []


def _turns(n: int, observation: int = 4000) -> list[tuple[dict[str, Any], str]]:
    return [
        ({"role": "assistant", "content": f"thought {i} " + "t" * 600}, f"obs {i} " + "o" * observation)
        for i in range(n)
    ]


def test_the_estimate_is_anchored_on_what_the_server_counted_and_errs_high():
    size = PromptSize()
    opening = build_messages("cwm_text", "S" * 4000, "T" * 2000, [])
    assert not size.known and size.estimate(opening) == 0
    size.report(opening, 1500)  # 4 characters per token
    assert size.estimate(opening) == 1500
    grown = build_messages("cwm_text", "S" * 4000, "T" * 2000, _turns(1))
    added = message_chars(grown) - message_chars(opening)
    assert size.estimate(grown) >= 1500 + added / 4 * 1.2
    before = size.estimate(grown)
    size.refused()
    assert size.estimate(grown) > before


def test_fitting_shortens_in_policy_order_until_a_whole_reply_fits():
    system, task = "S" * 4000, "T" * 2000
    turns = _turns(4)

    def build(shortened):
        return build_messages("function_calling", system, task, turns, shortened)

    size = PromptSize()
    size.report(build_messages("function_calling", system, task, []), 1500)
    full = size.estimate(build(frozenset()))
    chosen = fit(build, size, len(turns), frozenset(), full - 1500)
    assert chosen is not None and chosen <= {(0, "observation"), (1, "observation"), (2, "observation")}
    assert (0, "observation") in chosen  # the oldest goes first
    messages = build(chosen)
    assert messages[0]["content"] == system and messages[1]["content"] == task  # never shortened
    assert messages[-1]["content"] == turns[-1][1]  # the latest observation is whole
    assert fit(build, size, len(turns), frozenset(), full) == frozenset()  # it fits: nothing shortened
    assert fit(build, size, len(turns), frozenset(), 1000) is None  # not even the prompts fit


def test_the_stored_episode_rebuilds_each_request_as_it_was_sent():
    turns = _turns(3)
    steps = [
        Step(index=i, thought=None, action={"tool": "bash", "arguments": {}}, observation=obs, message=msg)
        for i, (msg, obs) in enumerate(turns)
    ]
    shortened = [{"step": 0, "part": "observation", "at": 2}, {"step": 0, "part": "thought", "at": 3}]
    episode = Episode(
        action_format="cwm_text",
        system_prompt="system",
        task_prompt="task",
        config={"context": {"window": 2048, "keep_chars": KEEP_CHARS, "shortened": shortened}},
    )
    final = build_messages("cwm_text", "system", "task", turns, {(0, "observation"), (0, "thought")})
    assert conversation(episode, steps) == final
    at_one = build_messages("cwm_text", "system", "task", turns[:1])
    assert conversation(episode, steps, before_step=1) == at_one
    at_two = build_messages("cwm_text", "system", "task", turns[:2], {(0, "observation")})
    assert conversation(episode, steps, before_step=2) == at_two
    assert "elided to fit the context window" in at_two[3]["content"]


# -- the model client: the cap on every request, the window from the server -------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_every_request_carries_the_per_turn_cap_and_a_cut_reply_says_so(field):
    with FakeOpenAI([reply("abc", finish_reason="length"), reply("ok")]) as server:

        async def go():
            config = ModelConfig(base_url=server.base_url, max_tokens=99, token_cap_field=field)
            async with ModelClient(config) as client:
                cut = await client.complete([{"role": "user", "content": "hi"}], max_tokens=64)
                whole = await client.complete([{"role": "user", "content": "hi"}])
                return cut, whole

        cut, _ = asyncio.run(go())
    assert [r[field] for r in server.requests] == [64, 99]
    assert cut.finish_reason == "length"


async def _serving(routes: dict[str, Any]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, body in routes.items():

        async def answer(request: web.Request, body: Any = body) -> web.Response:
            return web.json_response(body)

        app.router.add_get(path, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.mark.parametrize(
    ("routes", "window"),
    [
        ({"/v1/models": {"data": [{"id": "other"}, {"id": "m", "max_model_len": 32768}]}}, 32768),  # vLLM
        (
            {
                "/v1/models": {"data": [{"id": "m", "meta": {"n_ctx_train": 8192}}]},
                "/props": {"default_generation_settings": {"n_ctx": 2048}},
            },
            2048,
        ),  # llama.cpp: the window it serves, not the one it was trained with
        ({"/v1/models": {"data": [{"id": "m"}]}}, None),  # llama-cpp-python, OpenAI: not said
    ],
)
def test_the_context_window_is_read_from_the_server_when_it_says(routes, window):
    async def go():
        runner, base_url = await _serving(routes)
        try:
            async with ModelClient(ModelConfig(base_url=base_url, model="m", max_retries=0)) as client:
                return await client.context_window(), await client.context_window()
        finally:
            await runner.cleanup()

    assert asyncio.run(go()) == (window, window)


def test_a_configured_context_window_is_not_asked():
    async def go():
        async with ModelClient(ModelConfig(base_url="http://127.0.0.1:9/v1", context_window=4096)) as client:
            return await client.context_window()

    assert asyncio.run(go()) == 4096
