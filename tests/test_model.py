"""The model client against a real HTTP server (tests/fake_openai.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from core.errors import ForagerError
from forager.model import ModelClient
from forager.model_config import ModelConfig, normalize_base_url, proxy_for
from forager.model_errors import ModelError, parse_retry_after, should_retry
from forager.model_replies import Completion
from forager.policies import Action, policy_app, start_in_thread
from tests.fake_openai import (
    CONTEXT_OVERFLOW_BODIES,
    FakeOpenAI,
    Responder,
    context_overflow,
    malformed_tool_call,
    reply,
    slow,
    sse,
    status,
    stream_reply,
    tool_call,
    truncated,
)
from tools.calls import ToolCall, parse_cwm

MESSAGES = [{"role": "user", "content": "Fix the failing test."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a command.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    }
]


@pytest.fixture(autouse=True)
def no_api_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORAGER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def config(server: FakeOpenAI, **overrides: Any) -> ModelConfig:
    """Settings for ``server`` with a tiny backoff, so that retries cost milliseconds."""
    return ModelConfig(**{"base_url": server.base_url, "model": "m", "backoff": 0.001, **overrides})


def complete(cfg: ModelConfig, messages: list[dict[str, Any]] = MESSAGES, tools: Any = None) -> Completion:
    async def run() -> Completion:
        async with ModelClient(cfg) as client:
            return await client.complete(messages, tools)

    return asyncio.run(run())


def failure(cfg: ModelConfig) -> ModelError:
    with pytest.raises(ModelError) as raised:
        complete(cfg)
    return raised.value


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(*responses)``: a running FakeOpenAI with that script, stopped after the test."""
    servers: list[FakeOpenAI] = []

    def start(*script: Responder, models: tuple[str, ...] = ("fake-model",)) -> FakeOpenAI:
        server = FakeOpenAI(script, models=models).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


# --- successful completions ------------------------------------------------------------------------


def test_a_plain_completion_with_its_usage(serve: Any) -> None:
    server = serve(reply("Done.", usage=(42, 7)))
    result = complete(config(server))
    assert (result.content, result.tool_calls, result.reasoning) == ("Done.", [], None)
    assert (result.finish_reason, result.prompt_tokens, result.completion_tokens) == ("stop", 42, 7)
    assert result.retries == 0 and result.latency > 0
    assert result.message == {"role": "assistant", "content": "Done."}
    assert server.requests == [{"model": "m", "messages": MESSAGES}]


def test_tool_calls_come_back_raw_even_with_invalid_arguments(serve: Any) -> None:
    call = tool_call("bash", {"command": "pytest -x"}, id="call_7")
    server = serve(reply(tool_calls=[call]), malformed_tool_call())
    cfg = config(server)
    result = complete(cfg)
    assert (result.content, result.tool_calls, result.finish_reason) == (None, [call], "tool_calls")
    assert result.message["tool_calls"] == [call]
    (broken,) = complete(cfg).tool_calls
    assert broken["function"]["arguments"] == '{"command": "ls'


def test_reasoning_content_is_read_and_kept_in_the_message(serve: Any) -> None:
    server = serve(reply("42", reasoning="Six times seven."))
    result = complete(config(server))
    assert (result.content, result.reasoning) == ("42", "Six times seven.")
    assert result.message["reasoning_content"] == "Six times seven."


def test_a_message_with_nothing_in_it_is_an_empty_completion_and_missing_usage_counts_zero(
    serve: Any,
) -> None:
    server = serve(reply(None, usage=None, finish_reason="length"))
    result = complete(config(server))
    assert (result.content, result.tool_calls, result.finish_reason) == (None, [], "length")
    assert (result.prompt_tokens, result.completion_tokens, result.retries) == (0, 0, 0)


def test_the_model_is_resolved_once_from_the_served_list(serve: Any) -> None:
    server = serve(reply("a"), reply("b"), reply("c"), models=("served/first", "served/second"))

    async def run() -> list[str]:
        async with ModelClient(config(server, model=None)) as client:
            await asyncio.gather(*(client.complete(MESSAGES) for _ in range(3)))
            return await client.models()

    assert asyncio.run(run()) == ["served/first", "served/second"]
    assert [body["model"] for body in server.requests] == ["served/first"] * 3
    assert server.model_requests == 2  # one resolution for the three completions, one explicit call


def test_a_server_listing_no_model_needs_one_named(serve: Any) -> None:
    server = serve(models=())
    error = failure(config(server, model=None))
    assert error.kind == "bad_response" and "ModelConfig.model" in str(error)


# --- what is sent ------------------------------------------------------------------------------------


def test_the_api_key_comes_from_the_environment_forager_first(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(reply(), reply(), reply(), reply())
    complete(config(server))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    complete(config(server))
    monkeypatch.setenv("FORAGER_API_KEY", "sk-forager")
    complete(config(server))
    complete(config(server, api_key="sk-explicit"))
    assert [headers.get("Authorization") for headers in server.headers] == [
        None,
        "Bearer sk-openai",
        "Bearer sk-forager",
        "Bearer sk-explicit",
    ]


def test_sampling_parameters_only_when_set_tools_when_given_and_extra_body_merged(serve: Any) -> None:
    server = serve(reply(), reply())
    complete(config(server), tools=[])
    complete(
        config(
            server,
            temperature=0.0,  # falsy, yet set: it must be sent
            top_p=0.95,
            max_tokens=512,
            seed=0,
            extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}},
        ),
        tools=TOOLS,
    )
    plain, full = server.requests
    assert plain == {"model": "m", "messages": MESSAGES}
    assert full == {
        "model": "m",
        "messages": MESSAGES,
        "temperature": 0.0,
        "top_p": 0.95,
        "max_tokens": 512,
        "seed": 0,
        "tools": TOOLS,
        "tool_choice": "auto",
        "top_k": 20,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def test_extra_body_overrides_the_defaults(serve: Any) -> None:
    server = serve(reply())
    complete(config(server, extra_body={"tool_choice": "required"}), tools=TOOLS)
    assert server.requests[0]["tool_choice"] == "required"


# --- retries -----------------------------------------------------------------------------------------


def test_a_rate_limit_waits_as_long_as_retry_after_says(serve: Any) -> None:
    server = serve(status(429, retry_after=1), reply("finally"))
    started = time.monotonic()
    result = complete(config(server))  # backoff alone would retry within milliseconds
    assert time.monotonic() - started >= 1.0
    assert (result.content, result.retries, len(server.requests)) == ("finally", 1, 2)


def test_server_errors_are_retried_and_counted(serve: Any) -> None:
    server = serve(status(500), status(503), status(408), reply("ok"))
    result = complete(config(server))
    assert (result.content, result.retries, len(server.requests)) == ("ok", 3, 4)
    assert server.requests[0] == server.requests[3]  # the same request, unchanged


def test_a_truncated_body_is_retried(serve: Any) -> None:
    server = serve(truncated(), reply("whole"))
    result = complete(config(server))
    assert (result.content, result.retries) == ("whole", 1)


def test_exhausted_retries_are_unavailable_with_the_url_and_last_cause(serve: Any) -> None:
    server = serve(status(500), status(502), status(503, message="overloaded"))
    error = failure(config(server, max_retries=2))
    assert error.kind == "unavailable"
    assert f"{server.base_url}/chat/completions" in str(error)
    assert "HTTP 503" in str(error) and "overloaded" in str(error) and "3 times" in str(error)
    assert len(server.requests) == 3


def test_malformed_bodies_to_the_end_are_a_bad_response(serve: Any) -> None:
    server = serve(truncated(), truncated())
    error = failure(config(server, max_retries=1))
    assert error.kind == "bad_response" and "not JSON" in str(error)
    assert len(server.requests) == 2


@pytest.mark.parametrize("flavor", sorted(CONTEXT_OVERFLOW_BODIES))
def test_a_context_overflow_is_never_retried(serve: Any, flavor: str) -> None:
    server = serve(context_overflow(flavor), reply("must not be reached"))
    error = failure(config(server))
    assert error.kind == "context_overflow" and "context window" in str(error)
    assert len(server.requests) == 1


def test_a_payload_too_large_is_a_context_overflow(serve: Any) -> None:
    server = serve(status(413), reply())
    assert failure(config(server)).kind == "context_overflow"
    assert len(server.requests) == 1


@pytest.mark.parametrize("code", [401, 403])
def test_refused_credentials_are_not_retried_and_name_the_variables(serve: Any, code: int) -> None:
    server = serve(status(code, message="invalid api key"), reply())
    error = failure(config(server, api_key="wrong"))
    assert error.kind == "auth"
    assert (
        "FORAGER_API_KEY" in str(error) and "OPENAI_API_KEY" in str(error) and "invalid api key" in str(error)
    )
    assert len(server.requests) == 1


def test_another_client_error_carries_the_servers_message(serve: Any) -> None:
    server = serve(status(400, message='"auto" tool choice requires --enable-auto-tool-choice'), reply())
    error = failure(config(server))
    assert error.kind == "bad_request" and "--enable-auto-tool-choice" in str(error)
    assert isinstance(error, ForagerError)
    assert len(server.requests) == 1


def test_a_dead_server_is_unavailable_quickly() -> None:
    # A bound socket that never listens refuses connections, and no other test can take its port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ModelError) as raised:
            complete(
                ModelConfig(base_url=f"http://127.0.0.1:{port}", model="m", max_retries=2, backoff=0.001)
            )
    assert time.monotonic() - started < 2
    assert raised.value.kind == "unavailable"
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in str(raised.value)


def test_a_request_past_its_timeout_is_retried_then_unavailable(serve: Any) -> None:
    server = serve(slow(5), slow(5), reply("too late"))
    started = time.monotonic()
    error = failure(config(server, timeout=0.2, max_retries=1))
    assert time.monotonic() - started < 2
    assert error.kind == "unavailable" and "no answer within 0.2 s" in str(error)
    assert len(server.requests) == 2


def test_no_more_requests_in_flight_than_the_concurrency(serve: Any) -> None:
    server = serve(*(slow(0.2, reply(str(n))) for n in range(6)))

    async def run() -> list[Completion]:
        async with ModelClient(config(server, concurrency=2)) as client:
            return await asyncio.gather(*(client.complete(MESSAGES) for _ in range(6)))

    started = time.monotonic()
    results = asyncio.run(run())
    assert sorted(result.content for result in results) == [str(n) for n in range(6)]
    assert server.max_in_flight == 2  # the limit holds, and is used
    assert time.monotonic() - started >= 0.6  # three rounds of two
    assert all(result.latency >= 0.2 for result in results)


def test_waiting_for_a_turn_does_not_count_against_the_timeout(serve: Any) -> None:
    server = serve(*(slow(0.3, reply(str(n))) for n in range(3)))

    async def run() -> list[Completion]:
        async with ModelClient(config(server, concurrency=1, timeout=0.5)) as client:
            return await asyncio.gather(*(client.complete(MESSAGES) for _ in range(3)))

    results = asyncio.run(run())  # the last one waits 0.6 s for its turn, longer than the timeout
    assert [result.retries for result in results] == [0, 0, 0]
    assert len(server.requests) == 3


# --- pure functions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "body", "expected"),
    [
        (408, "", True),
        (409, "", True),
        (429, '{"error": {"message": "Rate limit reached"}}', True),
        (500, "Internal Server Error", True),
        (502, "<html>Bad Gateway</html>", True),
        (503, "", True),
        (400, '{"message": "invalid value for temperature"}', False),
        (401, "", False),
        (403, "", False),
        (404, '{"message": "The model `x` does not exist."}', False),
        (413, "Request Entity Too Large", False),
        (422, '{"detail": "unprocessable"}', False),
        (400, "This model's maximum context length is 4096 tokens.", False),
        # An overflow stays an overflow whatever the status: repeating the request cannot help.
        (500, '{"error": {"code": "context_length_exceeded"}}', False),
        (503, "the request exceeds the available context size, try increasing it", False),
    ],
)
def test_should_retry(code: int, body: str, expected: bool) -> None:
    assert should_retry(code, body) is expected


@pytest.mark.parametrize(("code", "body"), sorted(CONTEXT_OVERFLOW_BODIES.values(), key=str))
def test_should_retry_refuses_every_servers_overflow(code: int, body: dict[str, Any]) -> None:
    assert should_retry(code, json.dumps(body)) is False


def test_should_retry_refuses_sglangs_newer_overflow() -> None:
    body = "Input length (5000 tokens) exceeds the maximum allowed length (4096 tokens). Use a shorter input"
    assert should_retry(400, body) is False


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("3600", 60.0),
        (format_datetime(datetime(2025, 1, 1, 12, 0, 7, tzinfo=UTC), usegmt=True), 7.0),
        ("Wed, 01 Jan 2025 11:59:00 GMT", 0.0),
        ("Wed, 01 Jan 2025 13:00:00 GMT", 60.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("https://example.invalid/v1beta/openai", "https://example.invalid/v1beta/openai"),
    ],
)
def test_normalize_base_url(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


def test_a_base_url_that_is_not_http_says_what_to_pass() -> None:
    with pytest.raises(ForagerError, match=r"http://127\.0\.0\.1:8000/v1"):
        normalize_base_url("127.0.0.1:8000")


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ForagerError, match="concurrency must be at least 1"):
        ModelConfig(base_url="http://127.0.0.1:8000", concurrency=0)


# --- proxies and TLS --------------------------------------------------------------------------------


def test_http_proxy_is_used_for_remote_servers(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake server stands in for the proxy: only through it can a name that resolves nowhere answer.
    server = serve(reply("via the proxy"))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert complete(config(server, base_url="http://model.invalid/v1")).content == "via the proxy"
    assert server.headers[0]["Host"] == "model.invalid"

    monkeypatch.setenv("NO_PROXY", "model.invalid")
    assert proxy_for("http://model.invalid/v1") is None


def test_a_server_on_this_machine_is_reached_directly_despite_a_proxy(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as dead:  # bound, never listening: a proxy there would refuse every request
        dead.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        server = serve(reply("direct"))
        assert complete(config(server)).content == "direct"
        assert proxy_for("http://localhost:8000/v1") is None
        assert proxy_for("http://[::1]:8000/v1") is None


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """(a private CA's PEM, a server context with a certificate for 127.0.0.1 that CA signed)."""
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=Forager test CA",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    return folder / "ca.pem", context


def test_an_https_server_is_trusted_through_the_ca_bundle(
    certificates: tuple[Path, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, context = certificates
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        monkeypatch.delenv(name, raising=False)
    with FakeOpenAI([reply("trusted"), reply("also trusted")], tls=context) as server:
        assert complete(config(server, ca_bundle=ca)).content == "trusted"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        assert complete(config(server)).content == "also trusted"
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        refused = failure(config(server, max_retries=0))
    assert refused.kind == "unavailable" and "certificate" in str(refused)
    assert len(server.requests) == 2


# --- streaming ---------------------------------------------------------------------------------------


def _fields(result: Completion) -> dict[str, Any]:
    """What a completion says, without how long it took."""
    return {name: value for name, value in vars(result).items() if name != "latency"}


def test_a_stream_is_asked_for_and_assembles_into_the_plain_completion(serve: Any) -> None:
    calls = [tool_call("bash", {"command": "ls -la"}, id="call_1"), tool_call("submit", {}, id="call_2")]
    server = serve(
        reply("Let me look around first.", tool_calls=calls, usage=(42, 7)),
        stream_reply("Let me look around first.", tool_calls=calls, usage=(42, 7)),
        stream_reply(None, tool_calls=calls[:1], usage=None),
    )
    plain = complete(config(server), tools=TOOLS)
    streamed = complete(config(server, stream=True), tools=TOOLS)
    assert _fields(streamed) == _fields(plain)
    assert streamed.message == {
        "role": "assistant",
        "content": "Let me look around first.",
        "tool_calls": calls,
    }
    assert server.requests[1] == {
        **server.requests[0],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # No text before the call, no usage chunk: content None, tokens 0, as in a plain answer.
    bare = complete(config(server, stream=True), tools=TOOLS)
    assert (bare.content, bare.tool_calls, bare.finish_reason) == (None, calls[:1], "tool_calls")
    assert (bare.prompt_tokens, bare.completion_tokens) == (0, 0)


def test_a_stream_in_another_servers_style_is_read(serve: Any) -> None:
    # vLLM's and others' habits: keep-alive comments, CRLF line breaks, the role in every delta, reasoning
    # deltas, a call's name split in two, `data:` without a space, usage on the last choice chunk, and
    # non-ASCII text with U+2028 sent unescaped.
    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        chunk = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return "data:" + json.dumps({**chunk, **extra}, ensure_ascii=False)

    events = [
        ": ping",
        event({"role": "assistant", "reasoning_content": "Think"}),
        event({"role": "assistant", "reasoning_content": "ing…"}),
        "event: message\r\n" + event({"role": "assistant", "content": "Lignes\u2028à voir"}),
        event({"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "ba"}}]}),
        event({"tool_calls": [{"index": 0, "function": {"name": "sh", "arguments": '{"command": '}}]}),
        event({"tool_calls": [{"index": 0, "id": "call_9", "function": {"arguments": '"ls"}'}}]}),
        event({}, "tool_calls", usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}),
    ]
    server = serve(sse(events))
    result = complete(config(server, stream=True), tools=TOOLS)
    assert (result.content, result.reasoning) == ("Lignes\u2028à voir", "Thinking…")
    assert result.tool_calls == [tool_call("bash", {"command": "ls"}, id="call_9")]
    assert (result.finish_reason, result.prompt_tokens, result.completion_tokens) == ("tool_calls", 9, 4)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(stream_reply("cut short", cut_after=3), id="connection dropped mid-body"),
        pytest.param(stream_reply("cut short", done=False), id="ended without [DONE]"),
        pytest.param(sse(["data: {not json"]), id="an event that is not JSON"),
    ],
)
def test_a_broken_stream_is_retried(serve: Any, broken: Responder) -> None:
    server = serve(broken, stream_reply("whole", usage=(3, 2)))
    result = complete(config(server, stream=True))
    assert (result.content, result.finish_reason, result.retries, result.completion_tokens) == (
        "whole",
        "stop",
        1,
        2,
    )


def test_a_stream_broken_to_the_end_is_a_bad_response_saying_so(serve: Any) -> None:
    server = serve(stream_reply("a", done=False), stream_reply("b", done=False))
    error = failure(config(server, stream=True, max_retries=1))
    assert error.kind == "bad_response" and "ended before `data: [DONE]`" in str(error)
    assert len(server.requests) == 2


def test_an_error_event_mid_stream_is_judged_as_an_error_answer(serve: Any) -> None:
    overflow = {"message": "This model's maximum context length is 4096 tokens.", "code": 400}
    server = serve(
        sse([f"data: {json.dumps({'error': {'message': 'engine died', 'code': 500}})}"]),
        stream_reply("recovered"),
        sse([f"data: {json.dumps({'error': overflow})}"]),
    )
    cfg = config(server, stream=True)
    assert complete(cfg).content == "recovered"
    error = failure(cfg)
    assert error.kind == "context_overflow" and "4096 tokens" in str(error)
    assert len(server.requests) == 3, "the overflow is not retried"


def test_a_server_that_ignores_stream_is_read_plainly(serve: Any) -> None:
    server = serve(reply("not streamed", usage=(5, 2)))
    result = complete(config(server, stream=True))
    assert (result.content, result.prompt_tokens, result.completion_tokens) == ("not streamed", 5, 2)


@pytest.mark.parametrize("tools", [TOOLS, None], ids=["function calling", "text format"])
@pytest.mark.parametrize("max_tokens", [None, 6], ids=["whole", "cut short"])
def test_a_policy_servers_stream_assembles_into_its_plain_answer(tools: Any, max_tokens: int | None) -> None:
    action = Action("Let me list the files, all of them.", ToolCall("bash", {"command": "ls -la /repo"}))
    base_url, stop = start_in_thread(policy_app("scripted", lambda messages: action))
    try:
        cfg = ModelConfig(base_url=base_url, max_tokens=max_tokens)
        plain = complete(cfg, tools=tools)
        streamed = complete(replace(cfg, stream=True), tools=tools)
    finally:
        stop()
    for result in (plain, streamed):  # the call ids differ: each answer makes its own
        for call in result.tool_calls:
            call["id"] = "call_x"
    assert _fields(streamed) == _fields(plain)
    if max_tokens is not None:
        assert plain.finish_reason == "length" and plain.completion_tokens == max_tokens
    elif tools:
        assert plain.finish_reason == "tool_calls" and plain.content == action.thought
    else:
        assert plain.finish_reason == "stop" and parse_cwm(plain.content) == action.call
