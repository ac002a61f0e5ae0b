"""The agent's tools, defined once as data: ``bash``, ``edit``, ``create``, ``submit`` (CWM's set).

Both ways a model can call them come from these definitions: the OpenAI function-calling schema
(:func:`openai_tools`) and CWM's text format, documented for a system prompt by :func:`cwm_tool_docs`
(parsed and rendered in :mod:`tools.calls`). Every argument is a string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Parameter:
    """One string argument of a tool."""

    name: str
    description: str
    required: bool = True


@dataclass(frozen=True)
class Tool:
    """A tool as a model sees it."""

    name: str
    description: str
    """What the tool does and what it needs, for the model; the same text in both formats."""
    parameters: tuple[Parameter, ...]
    cwm_body: str
    """The lines between ``<tool: NAME>`` and ``</tool>`` in CWM's format, ``[parameter]`` placeholders.

    The tests check that it parses back to exactly this tool's parameters.
    """
    cwm_notes: str = ""
    """What the CWM layout alone does not say (how a newline or an empty section is read)."""


TOOLS: tuple[Tool, ...] = (
    Tool(
        name="bash",
        description=(
            "Run a command in a persistent bash shell inside the repository's environment: the working "
            "directory and exported variables persist between calls, stdin is closed. The output (stdout "
            "and stderr interleaved, long output shortened in the middle) is followed by a line "
            "`[exit code N]`. Do not start interactive programs (editors, pagers, REPLs)."
        ),
        parameters=(Parameter("command", "The bash command (or script of several lines) to run."),),
        cwm_body="[command]",
    ),
    Tool(
        name="edit",
        description=(
            "Replace text in an existing file: `old_str` must occur in the file exactly once, matched "
            "character for character, whitespace and indentation included; it is replaced by `new_str`. "
            "Include enough surrounding lines to make `old_str` unique. Relative paths are relative to the "
            "repository. Answers with the edited region, numbered."
        ),
        parameters=(
            Parameter("path", "The file to change."),
            Parameter("old_str", "The exact text to replace (not empty)."),
            Parameter("new_str", "The text to put in its place (may be empty, to delete)."),
        ),
        cwm_body="[path]\n<<<<<<< SEARCH\n[old_str]\n=======\n[new_str]\n>>>>>>> REPLACE",
        cwm_notes=(
            "The SEARCH section must not be empty; the REPLACE section may be (write `=======` directly "
            "followed by `>>>>>>> REPLACE`). Exactly one SEARCH/REPLACE block per call, and neither "
            "section may contain a line that is exactly one of the three marker lines."
        ),
    ),
    Tool(
        name="create",
        description=(
            "Create a new file with the given content (parent directories are created). Refuses a path "
            "that already exists: change existing files with `edit`. Relative paths are relative to the "
            "repository."
        ),
        parameters=(
            Parameter("path", "The file to create."),
            Parameter("content", "The complete content of the new file."),
        ),
        cwm_body="[path]\n[content]",
        cwm_notes=(
            "Everything after the path line is the content, and the file ends with a newline after it; "
            "with nothing after the path line the file is empty. To end the file with blank lines, write "
            "them before `</tool>`."
        ),
    ),
    Tool(
        name="submit",
        description=(
            "Submit your changes (the diff of the repository against its starting state) as the final "
            "solution and end the task. Refused while there are no changes."
        ),
        parameters=(),
        cwm_body="",
    ),
)

TOOLS_BY_NAME: dict[str, Tool] = {tool.name: tool for tool in TOOLS}


def openai_tools() -> list[dict]:
    """The ``tools`` list of an OpenAI chat completion request, one function per tool, in order."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": {
                    "type": "object",
                    "properties": {
                        p.name: {"type": "string", "description": p.description} for p in tool.parameters
                    },
                    "required": [p.name for p in tool.parameters if p.required],
                    "additionalProperties": False,
                },
            },
        }
        for tool in TOOLS
    ]


def cwm_block(name: str, body: str) -> str:
    """One CWM tool call: ``body`` between the opening and the closing tag, each on its own line."""
    # The body's own lines sit between two newlines, so an empty body leaves no blank line.
    return f"<tool: {name}>\n{body}\n</tool>" if body else f"<tool: {name}>\n</tool>"


def cwm_tool_docs() -> str:
    """The system-prompt text that explains CWM's tool-call format and documents every tool."""
    sections = [
        "To use a tool, end your message with exactly one tool call block:",
        cwm_block("NAME", "ARGUMENTS"),
        "The text before the block is your reasoning. Only one block per message is executed; its result "
        "comes back in the next message. The opening tag is followed by a newline, and the closing tag "
        "`</tool>` stands at the start of its own line, so no line inside a block may start with `</tool>`.",
        "The tools:",
    ]
    for tool in TOOLS:
        section = f"## {tool.name}\n{tool.description}\n\n{cwm_block(tool.name, tool.cwm_body)}"
        if tool.cwm_notes:
            section += f"\n\n{tool.cwm_notes}"
        sections.append(section)
    return "\n\n".join(sections) + "\n"
