"""A reasoning model's thinking, told apart from its answer.

Reasoning models give their thinking in one of two ways: in a separate message field,
``reasoning_content`` (vLLM's and SGLang's reasoning parsers, DeepSeek's API) or ``reasoning``, or inline
in the content between ``<think>`` and ``</think>`` (DeepSeek-R1 distills, Qwen3, CWM, served without a
reasoning parser). Either way it is the step's thought and never its action: a tool block written while
thinking is not a call. Whether it is sent back to the model on later turns is a choice
(:data:`ReasoningPolicy`): most reasoning models are trained on conversations whose earlier turns have
their thinking removed, so ``drop`` is the default.
"""

from __future__ import annotations

import re
from typing import Any, Literal

ReasoningPolicy = Literal["keep", "drop"]
"""``keep``: later requests carry each turn's thinking as the server sent it (inline ``<think>`` text and
the ``reasoning_content`` field); ``drop``: they carry the answer only."""

_OPEN, _CLOSE = "<think>", "</think>"
_LEADING_BLANKS = re.compile(r"^\s+")


def split_inline(content: str | None) -> tuple[str | None, str]:
    """(the inline thinking of ``content``, the rest): the text of its ``<think>`` blocks, and the text
    around them.

    A ``</think>`` with no ``<think>`` before it closes thinking that began with the reply (chat
    templates that open the block in the prompt); a ``<think>`` never closed (a reply cut at the token
    cap) makes the rest of the reply thinking.
    """
    text = content or ""
    thoughts: list[str] = []
    answer: list[str] = []
    close = text.find(_CLOSE)
    if close != -1 and _OPEN not in text[:close]:
        thoughts.append(text[:close])
        text = text[close + len(_CLOSE) :]
    while (start := text.find(_OPEN)) != -1:
        answer.append(text[:start])
        end = text.find(_CLOSE, start)
        if end == -1:
            thoughts.append(text[start + len(_OPEN) :])
            text = ""
            break
        thoughts.append(text[start + len(_OPEN) : end])
        text = text[end + len(_CLOSE) :]
    answer.append(text)
    thinking = "\n\n".join(part.strip() for part in thoughts if part.strip())
    return thinking or None, _LEADING_BLANKS.sub("", "".join(answer))


def field_reasoning(raw: dict[str, Any]) -> str | None:
    """The thinking a server sent in a message field (``reasoning_content``, else ``reasoning``)."""
    value = raw.get("reasoning_content") or raw.get("reasoning")
    return value if isinstance(value, str) and value.strip() else None


def sent_back(raw: dict[str, Any], policy: ReasoningPolicy) -> dict[str, Any]:
    """The assistant message to append to the conversation, from the message the server sent.

    Keeps ``role``, ``content`` and ``tool_calls`` as sent (ids and argument text untouched) and drops
    what is not part of the conversation (refusals, vendor fields). With ``drop``, the thinking goes: the
    ``<think>`` blocks leave the content and no reasoning field is kept; with ``keep``, the content is
    untouched and a ``reasoning_content`` (or ``reasoning``) field stays as the server sent it.
    """
    message = {key: raw[key] for key in ("role", "content", "tool_calls") if key in raw}
    message.setdefault("role", "assistant")
    if policy == "keep":
        message.update((key, raw[key]) for key in ("reasoning_content", "reasoning") if raw.get(key))
    elif isinstance(message.get("content"), str):
        message["content"] = split_inline(message["content"])[1]
    return message
