"""A scriptable, fault-injecting OpenAI-compatible server for tests: real HTTP on 127.0.0.1.

::

    with FakeOpenAI([status(429, retry_after=1), reply("hello", usage=(12, 3))]) as server:
        client = ModelClient(ModelConfig(base_url=server.base_url))
        ...
    assert len(server.requests) == 2

Each ``POST /v1/chat/completions`` takes the next response of the script, in order; when the script runs
out the server answers 500 saying so. ``GET /v1/models`` lists ``models``. The server runs its own event
loop in a background thread, so plain tests, tests calling ``asyncio.run`` and code under test that
blocks all reach it the same way.

A script entry is a :data:`Responder`: an async function from the request's JSON body to the HTTP
response. Build them with :func:`reply`, :func:`status`, :func:`slow`, :func:`truncated`,
:func:`context_overflow` and :func:`malformed_tool_call`; streams (server-sent events) with
:func:`stream_reply` and :func:`sse`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

from aiohttp import web

Responder = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]

#: Error bodies servers send when the conversation does not fit, by server (status, JSON body).
CONTEXT_OVERFLOW_BODIES: dict[str, tuple[int, dict[str, Any]]] = {
    "vllm": (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 "
            "tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the "
            "messages or completion.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    "openai": (
        400,
        {
            "error": {
                "message": "Your input exceeds the context window of this model. Please adjust your input "
                "and try again.",
                "type": "invalid_request_error",
                "param": "input",
                "code": "context_length_exceeded",
            }
        },
    ),
    "llamacpp": (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5000,
                "n_ctx": 4096,
            }
        },
    ),
    "sglang": (
        400,
        {
            "object": "error",
            "message": "The input (5000 tokens) is longer than the model's context length (4096 tokens).",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
}


def tool_call(name: str, arguments: Mapping[str, Any] | str, id: str = "call_0") -> dict[str, Any]:
    """One OpenAI tool call; ``arguments`` is JSON-encoded unless it is text already."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id, "type": "function", "function": {"name": name, "arguments": text}}


def completion_body(
    request: Mapping[str, Any],
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning: str | None = None,
    usage: tuple[int, int] | None = (0, 0),
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A chat completion as OpenAI shapes it, answering ``request`` (whose model it names)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
                "logprobs": None,
            }
        ],
    }
    if usage is not None:
        prompt, completion = usage
        body["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return body


def reply(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] | None = (0, 0),
    reasoning: str | None = None,
    finish_reason: str | None = None,
) -> Responder:
    """A successful completion; ``usage`` is (prompt, completion) tokens, None to leave ``usage`` out."""

    async def respond(request: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(
            completion_body(
                request,
                content,
                tool_calls=tool_calls,
                reasoning=reasoning,
                usage=usage,
                finish_reason=finish_reason,
            )
        )

    return respond


def status(code: int, *, retry_after: float | str | None = None, message: str | None = None) -> Responder:
    """An HTTP error with an OpenAI error body; ``retry_after`` (seconds, or an HTTP date as text) is
    sent as the ``Retry-After`` header."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    error = {"message": message or f"scripted HTTP {code}", "type": "fake_error", "code": code}

    async def respond(request: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": error}, status=code, headers=headers)

    return respond


def slow(seconds: float, then: Responder | None = None) -> Responder:
    """``then`` (by default an empty reply) after ``seconds``; cancelled if the client hangs up first."""
    after = then or reply()

    async def respond(request: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await after(request)

    return respond


def truncated() -> Responder:
    """The first half of a completion's JSON, with consistent headers (JSON type, its actual length)."""

    async def respond(request: dict[str, Any]) -> web.StreamResponse:
        text = json.dumps(completion_body(request, "this answer is cut short"))
        return web.Response(text=text[: len(text) // 2], content_type="application/json")

    return respond


def context_overflow(flavor: Literal["vllm", "openai", "llamacpp", "sglang"] = "vllm") -> Responder:
    """The error that ``flavor``'s server sends for a conversation longer than the context window."""
    code, body = CONTEXT_OVERFLOW_BODIES[flavor]

    async def respond(request: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body, status=code)

    return respond


def chunk_events(
    request: Mapping[str, Any],
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] | None = (0, 0),
    finish_reason: str | None = None,
    piece: int = 5,
) -> list[str]:
    """The ``data:`` events OpenAI streams for that completion: the role, the content and each call's
    arguments in pieces of ``piece`` characters (a call's id and name first), the finish reason, then a
    usage chunk with no choices (unless ``usage`` is None). No ``[DONE]``."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion.chunk", "created": 0}
    head["model"] = request.get("model", "fake-model")

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**head, 'choices': [choice]})}"

    def pieces(text: str) -> list[str]:
        return [text[start : start + piece] for start in range(0, len(text), piece)]

    events = [event({"role": "assistant", "content": None if content is None else ""})]
    events += [event({"content": text}) for text in pieces(content or "")]
    for index, call in enumerate(tool_calls or []):
        function = call["function"]
        opening = {"index": index, "id": call["id"], "type": "function"}
        events.append(event({"tool_calls": [{**opening, "function": {"name": function["name"]}}]}))
        for text in pieces(function["arguments"]):
            events.append(event({"tool_calls": [{"index": index, "function": {"arguments": text}}]}))
    events.append(event({}, finish_reason or ("tool_calls" if tool_calls else "stop")))
    if usage is not None:
        totals = completion_body(request, usage=usage)["usage"]
        events.append(f"data: {json.dumps({**head, 'choices': [], 'usage': totals})}")
    return events


def sse(events: Iterable[str], *, done: bool = True, cut: bool = False) -> Responder:
    """A stream of server-sent ``events``, each written as given and ended by a blank line, then
    ``data: [DONE]`` unless ``done`` is False. With ``cut`` the connection drops after the events,
    mid-body (the chunked body never ends), as a proxy cutting it would."""
    texts = [*events, *(["data: [DONE]"] if done else [])]

    async def body() -> AsyncIterator[bytes]:
        for text in texts:
            yield f"{text}\n\n".encode()
            await asyncio.sleep(0)
        if cut:
            raise ConnectionResetError("FakeOpenAI: the stream is cut here, as the test asked")

    async def respond(request: dict[str, Any]) -> web.StreamResponse:
        return web.Response(body=body(), content_type="text/event-stream")

    return respond


def stream_reply(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] | None = (0, 0),
    done: bool = True,
    cut_after: int | None = None,
) -> Responder:
    """The completion :func:`reply` would send, streamed as OpenAI streams it (:func:`chunk_events`);
    ``cut_after`` N: only the first N events, then the connection drops."""

    async def respond(request: dict[str, Any]) -> web.StreamResponse:
        events = chunk_events(request, content, tool_calls=tool_calls, usage=usage)
        if cut_after is not None:
            return await sse(events[:cut_after], done=False, cut=True)(request)
        return await sse(events, done=done)(request)

    return respond


def malformed_tool_call() -> Responder:
    """A completion whose one tool call has ``arguments`` that are not valid JSON."""
    return reply(tool_calls=[tool_call("bash", '{"command": "ls')])


class FakeOpenAI:
    """The server; a context manager that starts it on a free port of 127.0.0.1 and stops it on exit.

    With ``tls`` (a server-side context) it speaks HTTPS. What it saw, for assertions: ``requests``
    (chat request bodies, in order), ``headers`` (their headers, same order), ``model_requests`` (how
    many ``GET /v1/models``) and ``max_in_flight`` (most chat requests being answered at once).
    """

    def __init__(
        self,
        script: Iterable[Responder] = (),
        models: Iterable[str] = ("fake-model",),
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.script: deque[Responder] = deque(script)
        self.tls = tls
        self.models = list(models)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.model_requests = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # Cancelling a handler whose client hung up lets a `slow` response end with the client's timeout,
        # and a short shutdown keeps a test that failed mid-request from waiting on it.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "the request body is not JSON"}}, status=400)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if not self.script:
                message = (
                    f"FakeOpenAI: the script has no response left for chat request #{len(self.requests)}; "
                    "add one to the test's script"
                )
                return web.json_response(
                    {"error": {"message": message, "type": "script_exhausted"}}, status=500
                )
            return await self.script.popleft()(body)
        finally:
            self._in_flight -= 1

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.model_requests += 1
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in self.models]
        return web.json_response({"object": "list", "data": data})
