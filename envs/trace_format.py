"""Execution traces as text: CWM's token format, structured frames, and a readable listing.

A recording (see ``envs.tracer``) holds ``files``, the function ``blocks`` it entered (the entry's
first), the ``source`` lines it names by file and line number, and ``frames``
``[event, file index, line, locals, value]``, locals already in CWM's diff form (``".."`` for a value
unchanged since the previous frame of the same scope).

The CWM form (facebookresearch/cwm, PROMPTING_GUIDE.md, "Trace Prediction") is
``<|trace_context_start|>CONTEXT<|frame_sep|>`` then one frame after another, each ended by
``<|frame_sep|>``, then ``<|end_of_text|>`` when the entry's scope is left. The context is the source
of the functions the trace enters, grouped by file under a ``# path`` comment line, the entry's ``def``
line marked ``  # << START_OF_TRACE``. ``<|begin_of_text|>`` is left to the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

TRACE_CONTEXT_START = "<|trace_context_start|>"
FRAME_SEP = "<|frame_sep|>"
ACTION_SEP = "<|action_sep|>"
ARG_SEP = "<|arg_sep|>"
END_OF_TEXT = "<|end_of_text|>"
EVENT_TOKENS = {
    "call": "<|call_sep|>",
    "line": "<|line_sep|>",
    "return": "<|return_sep|>",
    "exception": "<|exception_sep|>",
}
START_MARKER = "  # << START_OF_TRACE"
UNCHANGED = ".."


def context(data: dict[str, Any]) -> str:
    """The source context: the functions the trace entered, by file, the entry's ``def`` line marked."""
    blocks: list[list[Any]] = data["blocks"]
    if not blocks:
        return ""
    entry = blocks[0]
    paths = list(dict.fromkeys(path for path, _, _ in blocks))
    parts: list[str] = []
    for path in paths:
        lines = [f"# {path}"]
        for block in sorted((b for b in blocks if b[0] == path), key=lambda b: b[1]):
            if len(lines) > 1:
                lines.append("")
            block_lines = [data["source"][path].get(str(n), "") for n in range(block[1], block[2] + 1)]
            if block is entry:
                _mark_definition(block_lines)
            lines += block_lines
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _mark_definition(lines: list[str]) -> None:
    for number, line in enumerate(lines):
        if line.lstrip().startswith(("def ", "async def ")):
            lines[number] = line + START_MARKER
            return


def source_line(data: dict[str, Any], frame: list[Any]) -> str:
    """The text of the line a frame names."""
    path = data["files"][frame[1]]
    return data["source"][path].get(str(frame[2]), "")


def cwm_frame(data: dict[str, Any], frame: list[Any]) -> str:
    """One frame in CWM's tokens, its closing ``<|frame_sep|>`` included."""
    event, _, _, local_values, value = frame
    token = EVENT_TOKENS[event]
    line = source_line(data, frame)
    if event in ("call", "line"):
        return f"{token}{json.dumps(local_values)}{ACTION_SEP}{line}{FRAME_SEP}"
    return f"{token}{ACTION_SEP}{line}{ARG_SEP}{json.dumps(value)}{FRAME_SEP}"


def cwm_text(data: dict[str, Any], source_context: str | None = None) -> str:
    """The whole trace in CWM's format: context, frames, end of text."""
    source_context = context(data) if source_context is None else source_context
    frames = "".join(cwm_frame(data, frame) for frame in data["frames"])
    return f"{TRACE_CONTEXT_START}{source_context}{FRAME_SEP}{frames}{END_OF_TEXT}"


def resolved_frames(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The frames as objects, every ``".."`` replaced by the value it stands for.

    The inverse of the tracer's rule: a value is resolved from the previous call or line frame, and
    a return starts the next frame afresh.
    """
    previous: dict[str, str] | None = None
    for frame in data["frames"]:
        event, index, line, local_values, value = frame
        full = None
        if event in ("call", "line"):
            full = {
                name: (previous or {}).get(name, text) if text == UNCHANGED else text
                for name, text in local_values.items()
            }
            previous = full
        elif event == "return":
            previous = None
        yield {
            "event": event,
            "path": data["files"][index],
            "line": line,
            "source": source_line(data, frame),
            "locals": full,
            "value": value,
        }


def divergence(data: dict[str, Any]) -> str:
    """Where a non-deterministic trace's second recording differed from the first (stored with it)."""
    found = data.get("divergence")
    if not found:
        return "the second recording differed"
    if found.get("frame") is None:
        return f"the second recording: {found.get('second')}"
    number, first, second = found["frame"], found.get("first"), found.get("second")

    def said(frame: list[Any] | None) -> str:
        if frame is None:
            return "(no frame: the trace had ended)"
        event, _, line, local_values, value = frame
        shown = value if local_values is None else json.dumps(local_values, ensure_ascii=False)
        return f"{event} at line {line}: {shown}"

    return f"the recordings first differ at frame {number}: first {said(first)}; second {said(second)}"


def listing(data: dict[str, Any]) -> str:
    """A readable listing: each frame's event, place and source line, and the values that changed."""
    out: list[str] = []
    depth = 0
    for frame in data["frames"]:
        event, index, line, local_values, value = frame
        if event == "call":
            depth += 1
        indent = "  " * max(depth - 1, 0)
        where = f"{data['files'][index]}:{line}"
        out.append(f"{indent}{event:<9} {where:<28} {source_line(data, frame).strip()}")
        if local_values:
            changed = [f"{name}={text}" for name, text in local_values.items() if text != UNCHANGED]
            if changed:
                out.append(f"{indent}{'':<9} " + ", ".join(changed))
        if value is not None:
            out.append(f"{indent}{'':<9} {'->' if event == 'return' else '!!'} {value}")
        if event == "return":
            depth -= 1
    return "\n".join(out)
