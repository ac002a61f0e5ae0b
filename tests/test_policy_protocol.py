"""The policy servers speak the OpenAI chat protocol: checked with the official ``openai`` SDK as client.

The server runs on 127.0.0.1 (started by the test); the oracle answers for one task of a SQLite store.
Its first turn is ``bash`` (a grep for the task's function), its next ones read, test and ``edit``.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from forager.policies.oracle import oracle_action, oracle_app
from forager.policies.protocol import CHARS_PER_TOKEN
from forager.policies.server import start_in_thread
from forager.prompts import Prompts
from storage.models import Image, ImageStatus, Task, TaskKind
from storage.store import Store
from tools.calls import ToolCall, parse_cwm, parse_openai, render_cwm
from tools.definitions import cwm_tool_docs, openai_tools

GOLD = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,3 +1,3 @@
 def add(a, b):
     \"\"\"The sum of a and b.\"\"\"
-    return a - b
+    return a + b
"""
TOOLS = openai_tools()
FIRST = ToolCall("bash", {"command": "grep -rn add --include='*.py' . | head -20"})


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with Store(f"sqlite:///{tmp_path / 'forager.db'}") as store:
        repository = store.get_or_create_repository("/src/calc", "calc")
        image = store.save_image(
            Image(
                repository_id=repository.id,
                tag="forager/calc:1",
                status=ImageStatus.READY,
                base_image="python:3.11-slim",
                recipe={},
                recipe_hash="0",
                test_command="pytest -q tests",
            )
        )
        task = Task(
            instance_id="calc-1",
            kind=TaskKind.MUTATE_FIX,
            image_id=image.id,
            gold_patch=GOLD,
            problem_statement="add() subtracts.",
            fail_to_pass=["tests/test_calc.py::test_add"],
            meta={"function": "add"},
        )
        store.add_tasks([task])
        yield store.get_task("calc-1")


@pytest.fixture
def base_url(task: Task, tmp_path: Path) -> Iterator[str]:
    with Store(f"sqlite:///{tmp_path / 'forager.db'}") as store:
        url, stop = start_in_thread(oracle_app(store))
        yield url
        stop()


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    # trust_env=False: a proxy from the environment must not be asked for a loopback server.
    http = openai.DefaultHttpxClient(trust_env=False)
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, http_client=http) as sdk:
        yield sdk


def _messages() -> list[dict[str, Any]]:
    system, prompt = Prompts.load().render(
        workdir="/repo",
        tool_docs=cwm_tool_docs(),
        instance_id="calc-1",
        problem_statement="add() subtracts.",
        test_command="pytest -q tests",
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def _chat(client: openai.OpenAI, **options: Any) -> Any:
    return client.chat.completions.create(model="oracle", messages=_messages(), **options)


def _raw(base_url: str, path: str, body: bytes | None = None) -> tuple[int, str, dict[str, Any]]:
    """(status, content type, JSON body) of a request sent without the SDK, to send what it would not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(base_url + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], json.load(error)


# ---- models ------------------------------------------------------------------------------------------


def test_models_are_listed_and_retrieved_and_another_name_is_model_not_found(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["oracle"]
    model = client.models.retrieve("oracle")
    assert (model.id, model.object, model.owned_by) == ("oracle", "model", "forager")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    assert missing.value.code == "model_not_found" and "'gpt-4o' does not exist" in missing.value.message
    with pytest.raises(openai.NotFoundError) as asked:
        client.chat.completions.create(model="gpt-4o", messages=_messages())
    assert asked.value.code == "model_not_found" and asked.value.param == "model"
    assert "serves the policy 'oracle'" in asked.value.message


# ---- answers -----------------------------------------------------------------------------------------


def test_an_offered_tool_is_called_with_its_thought_as_content(client: openai.OpenAI, task: Task) -> None:
    reply = _chat(client, tools=TOOLS)
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert parse_openai([call.model_dump()]).arguments == FIRST.arguments
    thought = oracle_action(task, _messages()).thought
    assert choice.message.content == thought
    usage = reply.usage
    assert usage.prompt_tokens > 100
    generated = len(thought) + len("bash") + len(call.function.arguments)
    assert usage.completion_tokens == -(-generated // CHARS_PER_TOKEN)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="no tools"),
        pytest.param({"tools": TOOLS, "tool_choice": "none"}, id="tool_choice none"),
        pytest.param({"tools": [t for t in TOOLS if t["function"]["name"] != "bash"]}, id="bash not offered"),
    ],
)
def test_a_call_that_may_not_be_made_is_written_in_the_text_format(client: openai.OpenAI, options) -> None:
    (choice,) = _chat(client, **options).choices
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert parse_cwm(choice.message.content) == FIRST
    assert choice.message.content.endswith(render_cwm(FIRST))


def test_tool_choice_required_or_named_calls_that_function_or_is_refused(client: openai.OpenAI) -> None:
    for tool_choice in ("required", {"type": "function", "function": {"name": "bash"}}):
        (choice,) = _chat(client, tools=TOOLS, tool_choice=tool_choice).choices
        assert [call.function.name for call in choice.message.tool_calls] == ["bash"]
    refusals = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "edit"}}}, "call 'bash'"),
        ({"tools": TOOLS[1:], "tool_choice": "required"}, "call 'bash'"),  # bash not offered
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}}, "does not offer"),
        ({"tool_choice": "required"}, "offers no tools"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "invalid value for 'tool_choice'"),
    ]
    for options, message in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            _chat(client, **options)
        assert refused.value.param == "tool_choice" and message in refused.value.message, options


def test_max_tokens_cuts_the_reply_short_with_finish_reason_length(client: openai.OpenAI, task: Task) -> None:
    thought = oracle_action(task, _messages()).thought
    # Within the thought: the text is cut and there is no call.
    (choice,) = (reply := _chat(client, tools=TOOLS, max_tokens=3)).choices
    assert choice.finish_reason == "length" and not choice.message.tool_calls
    assert choice.message.content == thought[: 3 * CHARS_PER_TOKEN]
    assert reply.usage.completion_tokens == 3
    # Past the thought: the call is there, its arguments cut (not JSON), as a model's would be.
    limit = -(-(len(thought) + len("bash") + 10) // CHARS_PER_TOKEN)
    (choice,) = (reply := _chat(client, tools=TOOLS, max_completion_tokens=limit)).choices
    assert choice.finish_reason == "length" and choice.message.content == thought
    (call,) = choice.message.tool_calls
    assert json.dumps(FIRST.arguments).startswith(call.function.arguments)
    assert len(call.function.arguments) < len(json.dumps(FIRST.arguments))
    assert reply.usage.completion_tokens == limit
    # The text format is cut the same way; a limit the reply fits in changes nothing.
    (choice,) = _chat(client, max_tokens=4).choices
    assert (choice.finish_reason, choice.message.content) == ("length", thought[:16])
    (choice,) = _chat(client, tools=TOOLS, max_tokens=10_000).choices
    assert choice.finish_reason == "tool_calls"


def test_a_stop_sequence_ends_the_reply_before_it(client: openai.OpenAI, task: Task) -> None:
    thought = oracle_action(task, _messages()).thought
    (choice,) = _chat(client, stop=["</tool>", "never"]).choices
    text = f"{thought}\n{render_cwm(FIRST)}"
    assert (choice.finish_reason, choice.message.content) == ("stop", text[: text.index("</tool>")])
    # In the thought: the reply ends there, and the call it led to is never made.
    (choice,) = _chat(client, tools=TOOLS, stop="find").choices
    assert (choice.finish_reason, choice.message.tool_calls) == ("stop", None)
    assert choice.message.content == thought[: thought.index("find")]
    with pytest.raises(openai.BadRequestError) as refused:
        _chat(client, stop=[1])
    assert refused.value.param == "stop" and refused.value.code == "invalid_type"


def test_n_choices_are_the_same_action_with_their_own_ids(client: openai.OpenAI) -> None:
    single = _chat(client, tools=TOOLS)
    reply = _chat(client, tools=TOOLS, n=3)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    calls = [choice.message.tool_calls[0] for choice in reply.choices]
    assert {call.function.arguments for call in calls} == {
        single.choices[0].message.tool_calls[0].function.arguments
    }
    assert len({call.id for call in calls}) == 3
    assert reply.usage.completion_tokens == 3 * single.usage.completion_tokens
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens


# ---- streaming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"tools": TOOLS}, id="tool call"),
        pytest.param({}, id="text format"),
        pytest.param({"tools": TOOLS, "n": 2}, id="two choices"),
        pytest.param({"tools": TOOLS, "max_tokens": 12}, id="cut short"),
    ],
)
def test_a_stream_assembles_into_the_same_completion(client: openai.OpenAI, options: dict[str, Any]) -> None:
    plain = _chat(client, **options)
    # The SDK's own accumulator assembles the chunks.
    with client.chat.completions.stream(
        model="oracle", messages=_messages(), stream_options={"include_usage": True}, **options
    ) as stream:
        try:
            streamed = stream.get_final_completion()
        except openai.LengthFinishReasonError as cut:  # the SDK's parsing refuses a reply cut short
            streamed = cut.completion
    assert streamed.usage == plain.usage
    assert len(streamed.choices) == len(plain.choices)
    for got, expected in zip(streamed.choices, plain.choices, strict=True):
        assert got.finish_reason == expected.finish_reason
        assert got.message.content == expected.message.content
        calls = [(call.function.name, call.function.arguments) for call in got.message.tool_calls or []]
        wanted = [(call.function.name, call.function.arguments) for call in expected.message.tool_calls or []]
        assert calls == wanted


def test_stream_chunks_are_openai_shaped_and_usage_comes_only_when_asked(client: openai.OpenAI) -> None:
    chunks = list(_chat(client, tools=TOOLS, stream=True, stream_options={"include_usage": True}))
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].model == "oracle"
    first, *middle, last, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    call_deltas = [d for chunk in middle for d in chunk.choices[0].delta.tool_calls or []]
    assert call_deltas[0].id.startswith("call_") and call_deltas[0].function.name == "bash"
    assert len(call_deltas) > 2, "the arguments come in pieces"
    assert "".join(d.function.arguments for d in call_deltas) == json.dumps(FIRST.arguments)
    assert last.choices[0].finish_reason == "tool_calls"
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert usage.choices == [] and usage.usage.total_tokens > 100

    chunks = list(_chat(client, stream=True))
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert parse_cwm("".join(chunk.choices[0].delta.content or "" for chunk in chunks)) == FIRST


def test_a_stream_ends_with_done_as_server_sent_events(base_url: str) -> None:
    body = json.dumps({"model": "oracle", "messages": _messages(), "stream": True}).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with opener.open(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = response.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])


# ---- errors ------------------------------------------------------------------------------------------


def test_bad_requests_get_openai_error_bodies(base_url: str, client: openai.OpenAI) -> None:
    messages = _messages()
    cases = [
        (b"not json", 400, None, None, "not JSON"),
        (b"[1, 2]", 400, None, None, "must be a JSON object, not an array"),
        (json.dumps({"messages": messages}).encode(), 400, "model", "missing_required_parameter", "'model'"),
        (
            json.dumps({"model": "oracle"}).encode(),
            400,
            "messages",
            "missing_required_parameter",
            "'messages'",
        ),
        (
            json.dumps({"model": "oracle", "messages": "hi"}).encode(),
            400,
            "messages",
            "invalid_type",
            "a string",
        ),
        (
            json.dumps({"model": "oracle", "messages": messages, "n": 0}).encode(),
            400,
            "n",
            "invalid_value",
            "n",
        ),
        (
            json.dumps({"model": "oracle", "messages": messages, "max_tokens": "9"}).encode(),
            400,
            "max_tokens",
            "invalid_type",
            "an integer",
        ),
        (
            json.dumps({"model": "oracle", "messages": messages, "stream_options": {}}).encode(),
            400,
            "stream_options",
            "invalid_value",
            "only allowed when 'stream' is true",
        ),
        (
            json.dumps({"model": "oracle", "messages": messages, "tools": [{"type": "code"}]}).encode(),
            400,
            "tools[0]",
            "invalid_value",
            "of type 'function'",
        ),
    ]
    for body, status, param, code, message in cases:
        got, content_type, reply = _raw(base_url, "/chat/completions", body)
        assert (got, content_type) == (status, "application/json; charset=utf-8"), body
        assert set(reply["error"]) == {"message", "type", "param", "code"}
        assert reply["error"]["type"] == "invalid_request_error"
        assert (reply["error"]["param"], reply["error"]["code"]) == (param, code), body
        assert message in reply["error"]["message"], body

    for method_path, status in [("GET /v1/nowhere", 404), ("GET /v1/chat/completions", 405)]:
        path = method_path.split()[1].removeprefix("/v1")
        got, content_type, reply = _raw(base_url, path)
        assert (got, content_type) == (status, "application/json; charset=utf-8")
        assert f"no route {method_path}" in reply["error"]["message"]
        assert "POST /v1/chat/completions" in reply["error"]["message"]

    # A conversation the policy cannot answer is refused before any stream starts.
    with pytest.raises(openai.BadRequestError, match="unknown task 'nope-1'"):
        client.chat.completions.create(
            model="oracle", messages=[{"role": "user", "content": "Task id: nope-1"}], stream=True
        )


def test_a_client_hanging_up_mid_stream_is_no_server_failure(
    base_url: str, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = base_url.removeprefix("http://").removesuffix("/v1").split(":")
    body = json.dumps({"model": "oracle", "messages": _messages(), "stream": True, "n": 128}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # hang up: RST
    time.sleep(0.5)
    assert _chat(client).choices[0].finish_reason == "stop", "the server still answers"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
