"""The HTTP plumbing every policy server shares: the OpenAI chat protocol over aiohttp.

A policy is a plain function from the conversation so far (the request's ``messages``) to the next
:class:`Action`. :func:`policy_app` serves one as an OpenAI-compatible model:

- ``GET /v1/models`` lists one model, the policy's name;
- ``POST /v1/chat/completions`` answers with a ``chat.completion``. The action's format follows the
  request: a request that passes ``tools`` gets the call as ``tool_calls`` (function calling, the
  thought as ``content``); one without gets ``content`` holding the thought and the call as a CWM block
  (:func:`tools.calls.render_cwm`). Token counts are estimates (four characters a token).

A request the policy cannot answer (no task named in the conversation, an unknown task) gets HTTP 400
with an OpenAI-style error body whose message says why. Policies hold no per-episode state: everything
they decide comes from the conversation, so one server answers any number of concurrent episodes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from aiohttp import web

from core.errors import ForagerError
from forager.prompts import TASK_ID_LINE
from tools.calls import ToolCall, render_cwm

#: Rough characters per token, for the ``usage`` a client expects (no tokenizer is involved).
CHARS_PER_TOKEN = 4


class Action(NamedTuple):
    """A policy's answer for one turn."""

    thought: str
    """The text before the call (may be empty)."""
    call: ToolCall | None
    """The tool call; None when ``thought`` is the whole message, with no call in it (a malformed
    turn replayed as it was recorded)."""


Policy = Callable[[list[dict[str, Any]]], Action]
"""The next action for a conversation (the request's ``messages``). Runs in a worker thread, so it may
block (read the store); raises :class:`PolicyError` for a conversation it cannot answer."""


class PolicyError(ForagerError):
    """The conversation cannot be answered (no task named, unknown task ...); the message says why.

    Served as HTTP 400 with the message in an OpenAI-style error body.
    """


# ---- the conversation --------------------------------------------------------------------------------


def message_text(message: dict[str, Any]) -> str:
    """A message's text: its ``content`` string, or the text parts of a list of content parts."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def turn_number(messages: list[dict[str, Any]]) -> int:
    """The turn being asked for, from 0: the number of assistant messages already in the conversation."""
    return sum(message.get("role") == "assistant" for message in messages)


def observations(messages: list[dict[str, Any]]) -> list[str]:
    """What each past turn observed, in order: the text of the messages after its assistant message.

    Function calling answers with ``tool`` messages, the CWM format with a ``user`` message; either way
    every message up to the next assistant message belongs to the turn (joined by newlines).
    """
    seen: list[list[str]] = []
    for message in messages:
        if message.get("role") == "assistant":
            seen.append([])
        elif seen:
            seen[-1].append(message_text(message))
    return ["\n".join(texts) for texts in seen]


def conversation_task_id(messages: list[dict[str, Any]]) -> str:
    """The instance id of the task the conversation is about, from its ``Task id: ...`` line.

    System and user messages are searched, in order, and the first line found wins: the task prompt
    comes before any observation that quotes such a line (a grep of the templates, say), and tool
    messages, which hold only observations, are not searched at all.

    Raises:
        PolicyError: no such line.
    """
    for message in messages:
        if message.get("role") in ("system", "user") and (
            match := TASK_ID_LINE.search(message_text(message))
        ):
            return match[1]
    raise PolicyError(
        "the conversation names no task: a policy server finds its task by the `Task id: <instance_id>` "
        "line of the task prompt (forager/templates/task.txt); keep that line in your prompt template"
    )


# ---- the protocol ------------------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.json_response(body, status=status)


def _tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def _assistant_message(action: Action, function_calling: bool) -> tuple[dict[str, Any], str, str]:
    """(the ``message`` of the choice, its ``finish_reason``, the text its completion tokens count)."""
    thought, call = action
    if call is None:
        return {"role": "assistant", "content": thought}, "stop", thought
    if function_calling:
        arguments = json.dumps(call.arguments)
        tool_call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }
        message = {"role": "assistant", "content": thought or None, "tool_calls": [tool_call]}
        return message, "tool_calls", thought + call.name + arguments
    try:
        block = render_cwm(call)
    except ValueError as exc:
        raise PolicyError(
            f"the policy's {call.name} call cannot be written in CWM's text format ({exc}): request with "
            "`tools` to receive it as a function call"
        ) from None
    content = f"{thought}\n{block}" if thought else block
    return {"role": "assistant", "content": content}, "stop", content


def policy_app(name: str, policy: Policy) -> web.Application:
    """An aiohttp application serving ``policy`` as the model ``name`` (see the module docstring)."""

    async def models(_request: web.Request) -> web.Response:
        model = {"id": name, "object": "model", "created": 0, "owned_by": "forager"}
        return web.json_response({"object": "list", "data": [model]})

    async def completions(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON: send a chat completion request as JSON")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
            return _error(400, "`messages` must be a list of message objects")
        if body.get("stream"):
            return _error(400, f"{name} does not stream: send the request with `stream` false")
        try:
            # The policy may block (the oracle reads the store): off the event loop, so that concurrent
            # episodes are not served one at a time.
            action = await asyncio.to_thread(policy, messages)
            message, finish_reason, completion = _assistant_message(action, bool(body.get("tools")))
        except PolicyError as exc:
            return _error(400, str(exc))
        prompt_tokens = _tokens("".join(message_text(message) for message in messages))
        completion_tokens = _tokens(completion)
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    return app


# ---- running a server --------------------------------------------------------------------------------


def serve(app: web.Application, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` on ``host``:``port`` until interrupted (Ctrl-C). Clients use ``http://HOST:PORT/v1``."""
    web.run_app(app, host=host, port=port)


def start_in_thread(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` from a background thread: (its OpenAI base URL ``http://HOST:PORT/v1``, ``stop``).

    ``port`` 0 takes a free port. ``stop()`` closes the server and ends the thread; call it once. An error
    binding the address is raised here.
    """
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner.addresses[0][1]

    async def shut_down() -> None:
        await runner.cleanup()
        # Policies run in the loop's default executor: its threads must end before the loop closes.
        await loop.shutdown_default_executor()

    thread = threading.Thread(target=loop.run_forever, name="policy-server", daemon=True)
    thread.start()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(shut_down(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    try:
        bound = asyncio.run_coroutine_threadsafe(start(), loop).result()
    except BaseException:
        stop()
        raise
    address = f"[{host}]" if ":" in host else host
    return f"http://{address}:{bound}/v1", stop
