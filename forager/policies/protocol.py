"""The OpenAI chat protocol as the policy servers speak it: reading a request, writing its answer.

:func:`read_request` checks a ``POST /v1/chat/completions`` body and keeps what a policy's answer
depends on (:class:`ChatRequest`); :func:`make_choice` writes a policy's action as one choice of the
answer, honouring the offered ``tools``, ``tool_choice``, ``stop`` and the token limit;
:func:`completion` and :func:`chunks` shape the choices as a ``chat.completion`` or as the
``chat.completion.chunk`` events of a stream. A request the protocol refuses raises
:class:`RequestError`, served as OpenAI's error body.

Token counts are estimates, ``ceil(characters / 4)`` and at least 1 (no tokenizer is involved): a
prompt is its messages' text and tool calls, a completion its content and its call's name and
arguments. ``max_tokens`` cuts the completion at ``4 * max_tokens`` characters, so a reply cut short
never counts more tokens than the limit.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web

from forager.policies.conversation import Action, PolicyError, message_text
from tools.calls import render_cwm

#: Rough characters per token (no tokenizer is involved).
CHARS_PER_TOKEN = 4
#: Most choices one request may ask for (OpenAI's own limit).
MAX_CHOICES = 128
#: Characters of content or arguments per streamed delta.
STREAM_PIECE = 16
_TOOL_CHOICES = ("none", "auto", "required")


class RequestError(Exception):
    """A request the server refuses; :meth:`response` is OpenAI's error body for it."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def response(self) -> web.Response:
        error = {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}
        return web.json_response({"error": error}, status=self.status)


@dataclass(frozen=True)
class ChatRequest:
    """What a chat request asks for, checked."""

    model: str
    messages: list[dict[str, Any]]
    tools: frozenset[str]
    """Names of the offered functions; empty when none are offered."""
    tool_choice: str
    """``none``, ``auto``, ``required``, or the name of the one function the reply must call."""
    max_tokens: int | None
    """``max_completion_tokens``, else ``max_tokens`` (vLLM's precedence)."""
    n: int
    stop: tuple[str, ...]
    """Text that ends the reply where it first occurs (excluded)."""
    stream: bool
    include_usage: bool
    """``stream_options.include_usage``: end the stream with a chunk carrying ``usage``."""

    @property
    def forced(self) -> str | None:
        """The function ``tool_choice`` names, if it names one."""
        return None if self.tool_choice in _TOOL_CHOICES else self.tool_choice


class Choice(NamedTuple):
    """One choice of an answer."""

    content: str | None
    tool_call: dict[str, Any] | None
    """An OpenAI tool call (``id``, ``type``, ``function`` with ``name`` and ``arguments``), or None."""
    finish_reason: str
    tokens: int
    """Completion tokens it counts."""


# ---- reading a request -------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _invalid(param: str, expected: str, value: Any) -> RequestError:
    return RequestError(
        f"invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead",
        param=param,
        code="invalid_type",
    )


def _integer(body: dict[str, Any], param: str, low: int, high: int | None = None) -> int | None:
    value = body.get(param)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(param, "an integer", value)
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"from {low} to {high}"
        raise RequestError(f"'{param}' must be {bounds}, not {value}", param=param, code="invalid_value")
    return value


def _boolean(body: dict[str, Any], param: str) -> bool:
    value = body.get(param)
    if value is not None and not isinstance(value, bool):
        raise _invalid(param, "a boolean", value)
    return bool(value)


def _function_name(value: Any, param: str) -> str:
    """The name of a ``{"type": "function", "function": {"name": ...}}`` object."""
    if not isinstance(value, dict) or value.get("type") != "function":
        raise RequestError(
            f"'{param}' must be an object of type 'function', with the function's name in function.name",
            param=param,
            code="invalid_value",
        )
    function = value.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        message = f"'{param}' names no function: set function.name"
        raise RequestError(message, param=param, code="invalid_value")
    return name


def _stop(value: Any) -> tuple[str, ...]:
    words = [value] if isinstance(value, str) else value or []
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise _invalid("stop", "a string or an array of strings", value)
    return tuple(word for word in words if word)


def read_request(body: Any) -> ChatRequest:
    """The chat request in a decoded JSON ``body``.

    Raises:
        RequestError: a field missing, of the wrong type or out of range; a ``tool_choice`` that
            calls for a tool without offering one; ``stream_options`` without ``stream``.
    """
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, not {_type_name(body)}")
    for param in ("model", "messages"):
        if body.get(param) is None:
            raise RequestError(
                f"missing required parameter: '{param}'", param=param, code="missing_required_parameter"
            )
    model, messages = body["model"], body["messages"]
    if not isinstance(model, str):
        raise _invalid("model", "a string", model)
    if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        raise _invalid("messages", "an array of message objects", messages)

    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _invalid("tools", "an array of tool objects", tools)
    offered = frozenset(_function_name(tool, f"tools[{index}]") for index, tool in enumerate(tools))
    tool_choice = body.get("tool_choice")
    if tool_choice is None:
        tool_choice = "auto"
    elif isinstance(tool_choice, dict):
        tool_choice = _function_name(tool_choice, "tool_choice")
        if tool_choice not in offered:
            raise RequestError(
                f"'tool_choice' names the function {tool_choice!r}, which 'tools' does not offer "
                f"(offered: {', '.join(sorted(offered)) or 'none'})",
                param="tool_choice",
                code="invalid_value",
            )
    elif tool_choice not in _TOOL_CHOICES:
        raise RequestError(
            f"invalid value for 'tool_choice': {tool_choice!r}; use 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
            code="invalid_value",
        )
    elif tool_choice == "required" and not offered:
        raise RequestError(
            "'tool_choice' is 'required' but the request offers no tools: pass them in 'tools'",
            param="tool_choice",
            code="invalid_value",
        )

    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "an object", options)
    if options is not None and not stream:
        raise RequestError(
            "'stream_options' is only allowed when 'stream' is true",
            param="stream_options",
            code="invalid_value",
        )
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    return ChatRequest(
        model=model,
        messages=messages,
        tools=offered,
        tool_choice=tool_choice,
        max_tokens=max_tokens,
        n=_integer(body, "n", 1, MAX_CHOICES) or 1,
        stop=_stop(body.get("stop")),
        stream=stream,
        include_usage=_boolean(options or {}, "include_usage"),
    )


# ---- answering ---------------------------------------------------------------------------------------


def count_tokens(characters: int) -> int:
    """The estimated tokens of ``characters`` characters of text (see the module docstring)."""
    return max(1, math.ceil(characters / CHARS_PER_TOKEN))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The estimated tokens of a conversation: its messages' text and their tool calls."""
    characters = 0
    for message in messages:
        characters += len(message_text(message))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                characters += sum(len(str(function.get(key) or "")) for key in ("name", "arguments"))
    return count_tokens(characters)


def make_choice(action: Action, request: ChatRequest) -> Choice:
    """``action`` as one choice answering ``request`` (a fresh tool-call id each time).

    The call is a ``tool_calls`` entry when the request offers its tool and ``tool_choice`` allows
    calls; otherwise the message is text, the thought followed by the call in CWM's text format (as a
    model offered no tool would write it). A stop sequence ends the message where it first occurs
    (no call follows it); ``max_tokens`` cuts the message short (``finish_reason`` ``length``).

    Raises:
        RequestError: ``tool_choice`` demands a call (``required``, or a named function) that is not
            the policy's next action.
        PolicyError: the call must be text and CWM's format cannot express it.
    """
    thought, call = action
    as_call = call is not None and request.tool_choice != "none" and call.name in request.tools
    demanded = request.tool_choice == "required" or request.forced is not None
    if demanded and (call is None or not as_call or request.forced not in (None, call.name)):
        then = "answer with text and no call" if call is None else f"call {call.name!r}"
        wanted = f"the function {request.forced!r}" if request.forced else "one of the offered tools"
        raise RequestError(
            f"'tool_choice' demands a call of {wanted}, but the policy's next turn is to {then}: "
            "offer that tool and let tool_choice be 'auto'",
            param="tool_choice",
            code="invalid_value",
        )
    if as_call:
        return _cut(thought or None, call.name, json.dumps(call.arguments), request)
    if call is None:
        return _cut(thought, None, "", request)
    try:
        block = render_cwm(call)
    except ValueError as exc:
        raise PolicyError(
            f"the policy's {call.name} call cannot be written in CWM's text format ({exc}): request with "
            f"`tools` offering {call.name!r} to receive it as a function call"
        ) from None
    return _cut(f"{thought}\n{block}" if thought else block, None, "", request)


def _cut(content: str | None, name: str | None, arguments: str, request: ChatRequest) -> Choice:
    """The choice of ``content`` then a call of ``name``, as the request's stop sequences and
    ``max_tokens`` let it be generated: up to the first stop sequence in the content (excluded, and no
    call after it), and then at most ``max_tokens`` (content first)."""
    text = content or ""
    finish_reason = "tool_calls" if name else "stop"
    stops = [at for word in request.stop if (at := text.find(word)) >= 0]
    if stops:
        text, name, finish_reason = text[: min(stops)], None, "stop"
        content = text
    call_length = len(name) + len(arguments) if name else 0
    budget = math.inf if request.max_tokens is None else request.max_tokens * CHARS_PER_TOKEN
    if len(text) + call_length > budget:
        finish_reason = "length"
        text = text[: int(budget)]
        room = int(budget) - len(text)
        if name and room > len(name):
            arguments = arguments[: room - len(name)]
        else:
            name = None
        content = text or (None if name else "")
    tool_call = None
    if name:
        function = {"name": name, "arguments": arguments}
        tool_call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}
    generated = len(content or "") + (len(name) + len(arguments) if name else 0)
    return Choice(content, tool_call, finish_reason, count_tokens(generated))


def _usage(prompt: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(choice.tokens for choice in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(model: str, choices: list[Choice], prompt: int) -> dict[str, Any]:
    """The ``chat.completion`` body of ``choices``; ``prompt`` is the prompt's tokens."""
    answers = []
    for index, choice in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": choice.content}
        if choice.tool_call:
            message["tool_calls"] = [choice.tool_call]
        answers.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": choice.finish_reason}
        )
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": answers,
        "usage": _usage(prompt, choices),
    }


def chunks(model: str, choices: list[Choice], prompt: int, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects streaming ``choices``, one choice after the other.

    Each choice opens with its role, then its content and its call's arguments come in pieces of
    :data:`STREAM_PIECE` characters (the call's id and name in its first delta), and a last delta holds
    its ``finish_reason``. With ``include_usage`` every chunk has ``usage: null`` and a final chunk
    with no choices holds the usage.
    """
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk"}
    head |= {"created": int(time.time()), "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**head, "choices": [choice], **extra}

    for index, choice in enumerate(choices):
        yield chunk(index, {"role": "assistant", "content": None if choice.content is None else ""})
        for piece in _pieces(choice.content or ""):
            yield chunk(index, {"content": piece})
        if choice.tool_call:
            call, function = choice.tool_call, choice.tool_call["function"]
            opening = {"index": 0, "id": call["id"], "type": "function"}
            opening["function"] = {"name": function["name"], "arguments": ""}
            yield chunk(index, {"tool_calls": [opening]})
            for piece in _pieces(function["arguments"]):
                yield chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield chunk(index, {}, choice.finish_reason)
    if include_usage:
        yield {**head, "choices": [], "usage": _usage(prompt, choices)}


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), STREAM_PIECE):
        yield text[start : start + STREAM_PIECE]
