"""What a model server answers, read: :class:`Completion` from a chat completion body, the model list
of ``GET /models``. An answer that is not what was asked for raises :class:`Transient` (``bad_response``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from forager.model_errors import Transient, excerpt


@dataclass(frozen=True)
class Completion:
    """One chat completion: the first choice of the server's answer."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    """The message's raw OpenAI ``tool_calls``, arguments still JSON text; [] if none."""
    reasoning: str | None
    """The message's ``reasoning_content`` (vLLM, SGLang, DeepSeek) or ``reasoning``, if present."""
    finish_reason: str | None
    prompt_tokens: int
    """From the answer's ``usage``; 0 when the server reports none."""
    completion_tokens: int
    latency: float
    """Seconds the successful request took (waiting for a slot and retries excluded)."""
    retries: int
    """How many failed attempts preceded the successful one."""
    message: dict[str, Any]
    """The raw assistant message, to append to the conversation as is."""


def model_entries(data: Any) -> list[dict[str, Any]]:
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("id"), str) for entry in entries
    ):
        raise Transient("bad_response", f"the body is not a model list: {excerpt(json.dumps(data))}")
    return entries


def model_ids(data: Any) -> list[str]:
    return [entry["id"] for entry in model_entries(data)]


def _count(value: Any) -> int:
    # Token counts are bookkeeping: a server reporting none, or nonsense, must not cost the completion.
    return value if isinstance(value, int) and value >= 0 else 0


def completion_fields(data: Any) -> dict[str, Any]:
    """The fields of a :class:`Completion` read from a chat completion body, all but the timing."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    tool_calls = (message.get("tool_calls") or []) if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(tool_calls, list):
        raise Transient("bad_response", f"the body is not a chat completion: {excerpt(json.dumps(data))}")
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return {
        "content": message.get("content"),
        "tool_calls": tool_calls,
        "reasoning": message.get("reasoning_content") or message.get("reasoning"),
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": _count(usage.get("prompt_tokens")),
        "completion_tokens": _count(usage.get("completion_tokens")),
        "message": message,
    }
