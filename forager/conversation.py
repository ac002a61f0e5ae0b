"""The conversation of an episode as the model saw it: grown by the agent, rebuilt from the store.

One set of rules serves both, so that an export is exactly what the model was sent: the system prompt,
the task prompt, then per step the assistant message as it was sent back to the model (its thinking kept
or dropped, :mod:`forager.reasoning`) followed by the observation messages of
:func:`observation_messages`, with the texts shortened to fit the context window shortened
(:mod:`forager.context`). :func:`conversation` rebuilds the list from an episode's records; the agent
grows its own with :func:`build_messages`.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Collection, Sequence
from typing import Any, Literal

from forager.context import KEEP_CHARS, Part, Shortening, shorten, shorten_thought
from storage import Episode, Step
from tools.calls import ToolCall, render_cwm

ActionFormat = Literal["function_calling", "cwm_text"]

#: The answer to every tool call of a turn after the first: one call is executed per turn.
NOT_EXECUTED = "Not executed: one tool call per turn."


def observation_messages(
    action_format: ActionFormat | str, assistant: dict[str, Any], observation: str
) -> list[dict[str, Any]]:
    """The messages that answer an assistant turn.

    With function calling and tool calls in the turn: one ``tool`` message per call id, the first
    carrying ``observation`` (the executed call's output, or the format error of a malformed call), the
    others :data:`NOT_EXECUTED`. Otherwise (the CWM text format, or no tool call at all): one ``user``
    message with ``observation``.
    """
    calls = assistant.get("tool_calls") or []
    if action_format == "function_calling" and calls:
        first, *extra = calls
        executed = {"role": "tool", "tool_call_id": first.get("id", ""), "content": observation}
        return [executed] + [
            {"role": "tool", "tool_call_id": call.get("id", ""), "content": NOT_EXECUTED} for call in extra
        ]
    return [{"role": "user", "content": observation}]


def opening_messages(system_prompt: str | None, task_prompt: str | None) -> list[dict[str, Any]]:
    """The system and task prompts as the conversation's first two messages (none before they exist)."""
    if system_prompt is None and task_prompt is None:
        return []
    return [
        {"role": "system", "content": system_prompt or ""},
        {"role": "user", "content": task_prompt or ""},
    ]


def assistant_message(
    action_format: ActionFormat | str, thought: str | None, call: ToolCall, call_id: str | None = None
) -> dict[str, Any]:
    """An assistant message that makes ``call`` in the format's way (for calls not sent by a model)."""
    if action_format == "function_calling":
        tool_call = {
            "id": call_id or f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        return {"role": "assistant", "content": thought, "tool_calls": [tool_call]}
    return {"role": "assistant", "content": f"{thought}\n{render_cwm(call)}" if thought else render_cwm(call)}


def conversation(
    episode: Episode, steps: Sequence[Step], *, before_step: int | None = None
) -> list[dict[str, Any]]:
    """The whole message list of a stored episode, as the model saw it (plus the last observation).

    Equal to the agent's ``EpisodeRun.messages`` at the end of the episode: the texts shortened to fit
    the context window (``episode.config["context"]["shortened"]``, see :mod:`forager.context`) are
    shortened as they were sent. With ``before_step``, the messages of that step's request instead:
    the earlier turns only, with the shortenings made by then.

    Steps stored before Forager recorded the model's messages (``Step.message`` None) get a message
    rebuilt from their thought and action: the same conversation, except what was not kept: tool call
    ids (``call_<step index>``), the exact argument text, and the tool calls of a malformed turn (its raw
    text becomes the content).
    """
    context = (episode.config or {}).get("context") or {}
    recorded = [Shortening.from_json(item) for item in context.get("shortened", [])]
    last = before_step if before_step is not None else math.inf
    turns = [
        (_rebuilt(episode.action_format, step) if step.message is None else step.message, step.observation)
        for step in sorted(steps, key=lambda s: s.index)
        if step.index < last
    ]
    return build_messages(
        episode.action_format,
        episode.system_prompt,
        episode.task_prompt,
        turns,
        {(s.step, s.part) for s in recorded if s.at <= last},
        keep=context.get("keep_chars", KEEP_CHARS),
    )


def build_messages(
    action_format: ActionFormat | str,
    system_prompt: str | None,
    task_prompt: str | None,
    turns: Sequence[tuple[dict[str, Any], str]],
    shortened: Collection[tuple[int, Part]] = (),
    keep: int = KEEP_CHARS,
) -> list[dict[str, Any]]:
    """The conversation of the opening prompts and ``turns`` (each: the assistant message as sent, the
    observation), with the texts named in ``shortened`` shortened to ``keep`` characters."""
    messages = opening_messages(system_prompt, task_prompt)
    for index, (assistant, observation) in enumerate(turns):
        if (index, "thought") in shortened:
            assistant = shorten_thought(assistant, action_format, keep)
        if (index, "observation") in shortened:
            observation = shorten(observation, keep)
        messages.append(assistant)
        messages += observation_messages(action_format, assistant, observation)
    return messages


def _rebuilt(action_format: str, step: Step) -> dict[str, Any]:
    """The assistant message of a step stored without one."""
    if not isinstance(step.action, dict):  # a format error: the raw text is all that was kept
        return {"role": "assistant", "content": step.action}
    call = ToolCall(step.action["tool"], step.action.get("arguments", {}))
    return assistant_message(action_format, step.thought, call, call_id=f"call_{step.index}")
