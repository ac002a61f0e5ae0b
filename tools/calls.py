"""A tool call as data, read from a model's message in either format, and written back in CWM's.

CWM's format (inside the message content)::

    reasoning...
    <tool: NAME>
    BODY
    </tool>

The opening tag may follow text on its line but is followed by a newline; the block ends at the first
line that starts with ``</tool>``, and the newline before it belongs to the delimiter, not to the body.
So a body may contain ``</tool>`` anywhere except at the start of a line, and may contain ``<tool: …>``
text; a message holds exactly one block, and text after it is ignored. How each tool lays out its
arguments in the body is ``Tool.cwm_body`` (see :mod:`tools.definitions`), read here by one small
function per tool.

The OpenAI format is the ``tool_calls`` list of a chat completion message; exactly one call per turn.

Every refusal is a :class:`FormatError` whose message is written for the model: it becomes the
observation of the turn, so it says what was wrong and shows the expected form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from core.errors import ForagerError
from tools.definitions import TOOLS, TOOLS_BY_NAME, Tool, cwm_block


@dataclass(frozen=True)
class ToolCall:
    """One call of one tool, whichever format it came in."""

    name: str
    arguments: dict[str, str]
    id: str | None = None
    """The OpenAI ``tool_call_id`` to answer; None for a call parsed from text."""


class FormatError(ForagerError):
    """The model's message does not hold exactly one well-formed tool call; the message says why."""


_OPENING = re.compile(r"<tool:[ \t]*([^<>\n]*?)[ \t]*>")
_CLOSING = re.compile(r"^</tool>", re.MULTILINE)
_SEARCH, _DIVIDER, _REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_TOOL_NAMES = ", ".join(tool.name for tool in TOOLS)


def _layout(name: str) -> str:
    return cwm_block(name, TOOLS_BY_NAME[name].cwm_body)


def _unbalanced(text: str) -> FormatError:
    openings, closings = len(_OPENING.findall(text)), len(_CLOSING.findall(text))
    return FormatError(
        f"unbalanced tool tags: {openings} opening `<tool: NAME>` and {closings} closing `</tool>` "
        "(a closing tag counts only at the start of a line). Each call is one block: the opening tag, a "
        "newline, the arguments, and `</tool>` at the start of its own line; no line inside a block may "
        "start with `</tool>`."
    )


def _blocks(text: str) -> list[tuple[str, str]]:
    """Every (name, body) block of ``text``, in order; raises on a tag without its partner."""
    blocks = []
    position = 0
    while opening := _OPENING.search(text, position):
        if _CLOSING.search(text, position, opening.start()):
            raise _unbalanced(text)
        body_start = opening.end() + 1
        if text[opening.end() : body_start] != "\n":
            raise FormatError(
                f"`{opening.group()}` must be followed by a newline: the arguments start on the next line."
            )
        closing = _CLOSING.search(text, body_start)
        if closing is None:
            raise _unbalanced(text)
        # The newline before `</tool>` is the delimiter; an empty body has none (`<tool: x>\n</tool>`).
        blocks.append((opening.group(1), text[body_start : closing.start() - 1]))
        position = closing.end()
    if _CLOSING.search(text, position):
        raise _unbalanced(text)
    return blocks


def _path(name: str, line: str) -> str:
    path = line.strip()
    if not path or path in (_SEARCH, _DIVIDER, _REPLACE):
        raise FormatError(
            f"missing path: the first line of a {name} block is the path of the file. "
            f"The expected layout is:\n{_layout(name)}"
        )
    return path


def _parse_bash(body: str) -> dict[str, str]:
    if not body.strip():
        raise FormatError(f"empty bash command: put the command between the tags:\n{_layout('bash')}")
    return {"command": body}


def _parse_edit(body: str) -> dict[str, str]:
    lines = body.split("\n")
    path = _path("edit", lines[0])

    def malformed(reason: str) -> FormatError:
        return FormatError(f"malformed edit: {reason}. The expected layout is:\n{_layout('edit')}")

    counts = [lines.count(marker) for marker in (_SEARCH, _DIVIDER, _REPLACE)]
    if counts != [1, 1, 1]:
        raise malformed(
            f"found {counts[0]} `{_SEARCH}`, {counts[1]} `{_DIVIDER}` and {counts[2]} `{_REPLACE}` lines, "
            "expected exactly one of each (one SEARCH/REPLACE block per call; to change several places, "
            "make several calls)"
        )
    search, divider, replace = (lines.index(marker) for marker in (_SEARCH, _DIVIDER, _REPLACE))
    if not (search == 1 and search < divider < replace == len(lines) - 1):
        raise malformed(
            f"the path line must be followed by `{_SEARCH}`, the old lines, `{_DIVIDER}`, the new lines, "
            f"and `{_REPLACE}` as the last line"
        )
    old_str = "\n".join(lines[search + 1 : divider])
    if not old_str:
        raise malformed("the SEARCH section is empty: it must hold the exact lines to replace")
    return {"path": path, "old_str": old_str, "new_str": "\n".join(lines[divider + 1 : replace])}


def _parse_create(body: str) -> dict[str, str]:
    path_line, _, content = body.partition("\n")
    # The body cannot end with the file's last newline (that one is the delimiter), so it is added back.
    return {"path": _path("create", path_line), "content": content + "\n" if content else ""}


def _parse_submit(body: str) -> dict[str, str]:
    if body.strip():
        raise FormatError(f"submit takes no arguments: send\n{_layout('submit')}")
    return {}


_BODY_PARSERS = {"bash": _parse_bash, "edit": _parse_edit, "create": _parse_create, "submit": _parse_submit}


def parse_cwm(text: str) -> ToolCall:
    """The one tool call in a model's message written in CWM's format (see the module docstring).

    Raises :class:`FormatError` when there is no block, several blocks, an unbalanced tag, an unknown
    tool, or a body that does not follow the tool's layout.
    """
    blocks = _blocks(text)
    if not blocks:
        raise FormatError(
            "no tool call found: end your message with exactly one block like\n"
            f"{cwm_block('bash', 'ls -la')}\n(the tools are {_TOOL_NAMES})"
        )
    if len(blocks) > 1:
        names = ", ".join(name for name, _ in blocks)
        raise FormatError(
            f"found {len(blocks)} tool calls ({names}) in one message, and none was executed: only one "
            "tool call per message is executed. Send exactly one block and wait for its result."
        )
    name, body = blocks[0]
    if name not in _BODY_PARSERS:
        raise FormatError(f"unknown tool {name!r}: the tools are {_TOOL_NAMES}")
    return ToolCall(name, _BODY_PARSERS[name](body))


def _tool(name: object) -> Tool:
    tool = TOOLS_BY_NAME.get(name) if isinstance(name, str) else None
    if tool is None:
        raise FormatError(f"unknown tool {name!r}: the tools are {_TOOL_NAMES}")
    return tool


def check_arguments(name: object, arguments: object) -> Tool:
    """The tool called ``name``, once ``arguments`` are exactly its parameters, each a string.

    Raises :class:`FormatError` naming the unknown tool, or every missing, unexpected and non-string
    argument along with the tool's signature.
    """
    tool = _tool(name)
    signature = f"{tool.name}({', '.join(p.name for p in tool.parameters)})"
    if not isinstance(arguments, dict):
        raise FormatError(
            f"the arguments of {tool.name} must be a JSON object, not {type(arguments).__name__}: "
            f"the signature is {signature}"
        )
    known = {p.name for p in tool.parameters}
    problems = [f"missing {p.name!r}" for p in tool.parameters if p.required and p.name not in arguments]
    problems += [f"unexpected {key!r}" for key in arguments if key not in known]
    problems += [
        f"{key!r} must be a string, not {type(value).__name__}"
        for key, value in arguments.items()
        if key in known and not isinstance(value, str)
    ]
    if problems:
        raise FormatError(
            f"bad arguments for {tool.name}: {'; '.join(problems)}. The signature is {signature}"
        )
    return tool


def parse_openai(tool_calls: list[dict]) -> ToolCall:
    """The one call in an OpenAI chat message's ``tool_calls``.

    Each entry is ``{"id", "type": "function", "function": {"name", "arguments": JSON string}}``; empty
    ``arguments`` count as ``{}``. Several calls are refused together, none executed: the caller answers
    every call id with the :class:`FormatError`'s message, since the API wants an answer to each.
    """
    if not tool_calls:
        raise FormatError(f"no tool call found: call exactly one tool ({_TOOL_NAMES}) per message")
    if len(tool_calls) > 1:
        names = ", ".join(str(call.get("function", {}).get("name")) for call in tool_calls)
        raise FormatError(
            f"{len(tool_calls)} tool calls ({names}) in one message, and none was executed: only one tool "
            "call per turn is executed. Call exactly one tool and wait for its result."
        )
    call = tool_calls[0]
    function = call.get("function", {})
    tool = _tool(function.get("name"))
    raw = function.get("arguments") or ""
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        example = json.dumps({p.name: "..." for p in tool.parameters})
        raise FormatError(
            f"the arguments of {tool.name} are not valid JSON ({exc}): send one JSON object, like {example}"
        ) from None
    check_arguments(tool.name, arguments)
    return ToolCall(tool.name, arguments, call.get("id"))


def _single_line_path(path: str) -> str:
    if not path or path != path.strip() or "\n" in path:
        raise ValueError(f"CWM's format cannot express the path {path!r} (one line, no surrounding space)")
    return path


def _marker_free(section: str) -> str:
    if any(line in (_SEARCH, _DIVIDER, _REPLACE) for line in section.split("\n")):
        raise ValueError(f"CWM's edit format cannot express a section with a marker line: {section!r}")
    return section


def render_cwm(call: ToolCall) -> str:
    """``call`` as a CWM block: the inverse of :func:`parse_cwm` (``parse_cwm(render_cwm(c)) == c``).

    Raises ``ValueError`` for an invalid call and for one the format cannot express: an empty or blank
    command, an empty ``old_str``, a path on several lines or with surrounding space, an edit section
    holding a marker line, file content that is neither empty nor ends with a newline (or is just a
    newline), or a body line that starts with ``</tool>``.
    """
    try:
        check_arguments(call.name, call.arguments)
    except FormatError as exc:
        raise ValueError(str(exc)) from None
    args = call.arguments
    if call.name == "bash":
        if not args["command"].strip():
            raise ValueError("CWM's format cannot express a blank bash command")
        body = args["command"]
    elif call.name == "edit":
        if not args["old_str"]:
            raise ValueError("CWM's format cannot express an edit with an empty old_str")
        # An empty REPLACE section is no line at all, so that the divider is followed by the end marker.
        new = [_marker_free(args["new_str"])] if args["new_str"] else []
        lines = [_single_line_path(args["path"]), _SEARCH, _marker_free(args["old_str"]), _DIVIDER, *new]
        body = "\n".join([*lines, _REPLACE])
    elif call.name == "create":
        path, content = _single_line_path(args["path"]), args["content"]
        if not content:
            body = path
        elif content.endswith("\n") and content != "\n":
            body = f"{path}\n{content[:-1]}"
        else:
            raise ValueError(f"CWM's create format cannot express content ending {content[-20:]!r}")
    else:
        body = ""
    if _CLOSING.search(body):
        raise ValueError("CWM's format cannot express a body with a line starting with `</tool>`")
    return cwm_block(call.name, body)
