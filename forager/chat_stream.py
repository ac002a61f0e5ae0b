"""Reading a streamed chat completion: server-sent events assembled into the body a plain request gets.

A chat request with ``"stream": true`` is answered with server-sent events, each ``data:`` line one
``chat.completion.chunk`` whose choices carry ``delta`` pieces of their message, and a last
``data: [DONE]``. :func:`assemble` joins the pieces the way the official ``openai`` SDK does (strings
concatenated, tool calls merged by their ``index``), so the result is the ``chat.completion`` the
server would have sent without streaming: ``choices`` with whole ``message`` objects and their
``finish_reason``, and the ``usage`` of the stream's usage chunk (``stream_options.include_usage``).

A stream without its ``[DONE]`` was cut mid-way (a proxy, a crashed server) and a ``data:`` event
holding an ``error`` object is the server giving up mid-answer: both raise :class:`StreamError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Line breaks as the server-sent events format defines them; str.splitlines would also split inside
# JSON text holding U+2028 and its kin, which servers may send unescaped.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Delta keys that name rather than extend: repeated in a later delta, the later value stands.
_REPLACED = frozenset({"index", "type", "role", "id"})


class StreamError(ValueError):
    """The events are not a whole chat completion; ``error`` is the server's error object, if it sent one."""

    def __init__(self, message: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error


def events(text: str) -> list[str]:
    """The ``data`` of each event in a server-sent events ``text``, in order.

    An event's ``data:`` lines are joined by newlines; comments (``: keep-alive``) and other fields
    (``event:``, ``id:``, ``retry:``) are skipped, as is an event with no data.
    """
    found: list[str] = []
    data: list[str] = []
    for line in [*_LINE_BREAK.split(text), ""]:
        if not line:
            if data:
                found.append("\n".join(data))
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    return found


def assemble(text: str) -> dict[str, Any]:
    """The ``chat.completion`` body that the stream ``text`` delivers (see the module docstring).

    Raises:
        StreamError: the stream ended before ``data: [DONE]``, an event is not a JSON object, or the
            server sent an error event.
    """
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for data in events(text):
        if data.strip() == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise StreamError(f"an event is not JSON ({exc}): {data[:200]}") from None
        if not isinstance(chunk, dict):
            raise StreamError(f"an event is not a JSON object: {data[:200]}")
        if isinstance(chunk.get("error"), dict):
            raise StreamError("the server sent an error mid-stream", chunk["error"])
        for key in ("id", "created", "model", "system_fingerprint"):
            head.setdefault(key, chunk.get(key))
        usage = chunk.get("usage") or usage
        for part in chunk.get("choices") or []:
            if not isinstance(part, dict) or not isinstance(part.get("index", 0), int):
                raise StreamError(f"a chunk's choice is not an object with an integer index: {data[:200]}")
            choice = choices.setdefault(part.get("index", 0), {"message": {}, "finish_reason": None})
            if isinstance(part.get("delta"), dict):
                _accumulate(choice["message"], part["delta"])
            choice["finish_reason"] = part.get("finish_reason") or choice["finish_reason"]
    else:
        raise StreamError(
            "the stream ended before `data: [DONE]`: the connection was cut mid-answer (by a proxy or the "
            "server)"
        )
    answers = []
    for index in sorted(choices):
        message = choices[index]["message"]
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                call.pop("index", None)  # a stream's bookkeeping: a whole message's calls have none
        answers.append({"index": index, **choices[index]})
    return {**head, "object": "chat.completion", "choices": answers, "usage": usage}


def _accumulate(into: dict[str, Any], delta: dict[str, Any]) -> None:
    """Add ``delta`` to the partial object ``into``: the ``openai`` SDK's rule, but for naming keys.

    Objects of ``delta`` become part of ``into`` as they are: each chunk is decoded afresh and used once.
    """
    for key, value in delta.items():
        have = into.get(key)
        if have is None or key in _REPLACED:
            if value is not None or key not in into:
                into[key] = value
        elif isinstance(have, str) and isinstance(value, str):
            into[key] = have + value
        elif isinstance(have, dict) and isinstance(value, dict):
            _accumulate(have, value)
        elif isinstance(have, list) and isinstance(value, list):
            for item in value:
                # Tool calls are merged by index; a server that sends whole calls may give none.
                index = item.get("index") if isinstance(item, dict) else None
                match = isinstance(index, int) and next(
                    (old for old in have if isinstance(old, dict) and old.get("index") == index), None
                )
                if match:
                    _accumulate(match, item)
                else:
                    have.append(item)
        elif value is not None:
            into[key] = value
