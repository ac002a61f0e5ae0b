"""What a policy is, and what it reads from the conversation it answers.

A policy is a plain function from the conversation so far (a chat request's ``messages``) to the next
:class:`Action`. It holds no per-episode state: everything it decides comes from the conversation
(the task named by its ``Task id: ...`` line, the turn number, what past turns observed), so one
server answers any number of concurrent episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from core.errors import ForagerError
from forager.prompts import TASK_ID_LINE
from tools.calls import ToolCall


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
