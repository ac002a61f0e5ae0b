"""Keeping an episode's conversation inside the model's context window.

The policy, applied before each request once the server has reported a prompt's size:

1. A request must leave room for a whole reply: its prompt plus the per-turn cap
   (``AgentConfig.max_completion_tokens``) must fit the window.
2. If it does not, texts are shortened, one at a time, until it does, in this order: the observations
   of the older turns (oldest first), then the text the model wrote besides its action in the older turns
   (oldest first), then the latest observation. A shortened text keeps its head and tail,
   :data:`KEEP_CHARS` characters in all, around a line saying how much was elided. The system prompt, the
   task prompt and the actions themselves (tool calls, CWM tool blocks) are never shortened.
3. A request that does not fit with everything shortened ends the episode ``context_overflow``, as
   does a server that refuses a request as too long when nothing is left to shorten.

Shortening is for good: a text once shortened stays so in every later request, so the conversation
grows by appending only, except at the turns that shortened something (which keeps servers' prefix
caches useful). Each shortening is recorded (:class:`Shortening`: which text, from which request on)
in the episode's config, so :func:`forager.conversation.conversation` rebuilds exactly what the model
was sent, at the end or at any turn.

Prompt sizes are counted as the server reports them (``usage.prompt_tokens``); the size of a request
not yet sent is estimated from the last reported one plus the characters added or removed since, at the
server's own characters-per-token rate, with a safety margin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: Characters a shortened text keeps (half from its head, half from its tail).
KEEP_CHARS = 400
#: Tokens assumed per message beyond its text (role markers of the chat template).
MESSAGE_OVERHEAD = 8
#: How much more (or less) a change of text is assumed to cost (or save) than the measured rate says.
MARGIN = 0.2

Part = Literal["observation", "thought"]


@dataclass(frozen=True)
class Shortening:
    """One text shortened: the ``part`` of step ``step``, from the request of step ``at`` on."""

    step: int
    part: Part
    at: int

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "part": self.part, "at": self.at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shortening:
        return cls(int(data["step"]), data["part"], int(data["at"]))


def shorten(text: str, keep: int = KEEP_CHARS) -> str:
    """``text`` cut to its head and tail, ``keep`` characters in all, with the cut said in between (or
    ``text`` itself when that would not be shorter)."""
    half = keep // 2
    elided = len(text) - 2 * half
    short = f"{text[:half]}\n[... {elided} characters elided to fit the context window ...]\n{text[-half:]}"
    return short if len(short) < len(text) else text


def shorten_thought(message: dict[str, Any], action_format: str, keep: int = KEEP_CHARS) -> dict[str, Any]:
    """An assistant message whose text besides the action is shortened; the action stays whole.

    With function calling the action is the ``tool_calls``, so the whole content is text; in the CWM
    text format the action is the tool block, so only the text before it is shortened.
    """
    content = message.get("content")
    if not isinstance(content, str):
        return message
    if action_format == "cwm_text" and "<tool:" in content:
        text, block = content.split("<tool:", 1)
        return {**message, "content": shorten(text, keep) + "\n<tool:" + block}
    return {**message, "content": shorten(content, keep)}


def candidates(steps: int) -> list[tuple[int, Part]]:
    """The texts of a conversation of ``steps`` turns in the order the policy shortens them."""
    older = range(steps - 1)
    latest: list[tuple[int, Part]] = [(steps - 1, "observation")] if steps else []
    return [(i, "observation") for i in older] + [(i, "thought") for i in older] + latest


def message_chars(messages: Iterable[dict[str, Any]]) -> int:
    """The characters of text in ``messages``: contents, reasoning and tool calls' names and arguments."""
    total = 0
    for message in messages:
        for key in ("content", "reasoning_content", "reasoning"):
            if isinstance(message.get(key), str):
                total += len(message[key])
        for call in message.get("tool_calls") or []:
            total += len(json.dumps(call.get("function", {})) if isinstance(call, dict) else str(call))
    return total


class PromptSize:
    """Estimates of a request's prompt tokens, anchored on the size the server reported last."""

    def __init__(self) -> None:
        self._chars: int | None = None
        self._messages = 0
        self._tokens = 0
        self._scale = 1.0

    @property
    def known(self) -> bool:
        """Whether the server has reported a prompt's size (before that, nothing is estimated)."""
        return self._chars is not None

    def report(self, messages: Sequence[dict[str, Any]], prompt_tokens: int) -> None:
        """The server counted ``prompt_tokens`` for ``messages`` (ignored when it counted none)."""
        if prompt_tokens > 0:
            self._chars, self._messages, self._tokens = message_chars(messages), len(messages), prompt_tokens

    def refused(self) -> None:
        """The server refused a request estimated to fit: estimate changes of text more dearly."""
        self._scale *= 1.5

    def estimate(self, messages: Sequence[dict[str, Any]]) -> int:
        """The prompt tokens ``messages`` will count (erring high); 0 before any report."""
        if self._chars is None:
            return 0
        rate = self._tokens / max(self._chars, 1)
        change = message_chars(messages) - self._chars
        factor = (1 + MARGIN) * self._scale if change > 0 else (1 - MARGIN) / self._scale
        extra_messages = max(len(messages) - self._messages, 0)
        return self._tokens + math.ceil(change * rate * factor) + MESSAGE_OVERHEAD * extra_messages


def fit(
    build: Callable[[frozenset[tuple[int, Part]]], list[dict[str, Any]]],
    size: PromptSize,
    steps: int,
    shortened: frozenset[tuple[int, Part]],
    limit: int,
) -> frozenset[tuple[int, Part]] | None:
    """The texts to have shortened (``shortened`` and more, in the policy's order) so that the request
    ``build`` makes of them is estimated at most ``limit`` prompt tokens; None if none will do."""
    chosen = shortened
    if size.estimate(build(chosen)) <= limit:
        return chosen
    for unit in candidates(steps):
        if unit in chosen:
            continue
        chosen = chosen | {unit}
        if size.estimate(build(chosen)) <= limit:
            return chosen
    return None
