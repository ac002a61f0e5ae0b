"""Executing a tool call against a runtime, and the edit algorithm as a pure function over strings.

The file tools use only ``Runtime.read_file``/``write_file``/``exists`` (bytes): they never run code in
the environment, so they work whatever Python (if any) the repository has.

Observation format (the ``output`` a model reads):

- bash: the command's output as the runtime returns it, then one status line: ``[exit code N]``, or
  ``[timed out after S seconds: the command was killed]``; lines such as
  ``[N bytes elided from the middle of the output]`` and ``[NOTE]`` (what the environment did besides
  running the command) follow when they apply. The status comes last, so it is never lost in long output.
- edit: ``Edited PATH: the new text is at lines A-B of N:`` and the region around the change, numbered
  like ``cat -n``; create: ``Created PATH (N lines).``; submit: the files the patch changes.
- a refusal: one paragraph saying what was wrong and what to do instead.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from dataclasses import dataclass

from unidiff import PatchSet

from envs.runtime import DiffError, Runtime
from tools.calls import FormatError, ToolCall, check_arguments

MAX_EDIT_BYTES = 5 * 1024 * 1024
"""Files larger than this are refused by ``edit``: the whole file travels in and out of the runtime."""
SNIPPET_CONTEXT = 4
"""Unchanged lines shown on each side of an edit."""
_CR = "\r"


@dataclass(frozen=True)
class ToolResult:
    """What executing one call produced."""

    output: str
    """The observation for the model (see the module docstring)."""
    ok: bool
    """The call did what it was asked: the command exited 0, the edit or file was written, the patch
    was submitted. False for a refusal, which is the model's to correct, never an exception."""
    submitted: bool = False
    """The model submitted: the episode ends, with ``patch``."""
    patch: str | None = None
    """The submitted diff against ``base``; only with ``submitted``."""


@dataclass(frozen=True)
class EditOutcome:
    """The result of applying one edit to a file's text."""

    text: str | None
    """The edited text; None when the edit was refused."""
    message: str
    """For the model: the numbered region around the change, or why the edit was refused."""


def _line_count(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def _line_of(text: str, index: int) -> int:
    """The 1-based line number of the character at ``index``."""
    return text.count("\n", 0, index) + 1


def _numbered(lines: list[str], first: int) -> str:
    """``lines`` numbered from ``first`` like ``cat -n``; a CRLF file's carriage returns are not shown."""
    return "\n".join(f"{number:6}\t{line.removesuffix(_CR)}" for number, line in enumerate(lines, first))


def _whitespace_hint(text: str, old: str) -> str | None:
    """Where ``old`` matches ``text`` once whitespace is ignored, and whether only indentation differs."""
    characters = "".join(old.split())
    if not characters:
        return None
    match = re.search(r"\s*".join(map(re.escape, characters)), text)
    if match is None:
        return None
    region = text[match.start() : match.end()]
    same_lines = [line.strip() for line in region.split("\n")] == [line.strip() for line in old.split("\n")]
    first, last = _line_of(text, match.start()), _line_of(text, match.end())
    lines = text.split("\n")[first - 1 : last]
    what = "the indentation (or trailing whitespace) differs" if same_lines else "the spacing differs"
    return (
        f"old_str matches lines {first}-{last} only when whitespace is ignored: {what}. Copy the lines "
        f"exactly as they are in the file:\n{_numbered(lines, first)}"
    )


def _closest(text: str, old: str, limit: int = 3) -> str:
    """The passages of ``text`` most similar to ``old`` (as many lines), numbered, best first."""
    lines = text.split("\n")
    size = old.count("\n") + 1
    matcher = difflib.SequenceMatcher(b=old, autojunk=False)
    scored = []
    for start in range(max(1, len(lines) - size + 1)):
        matcher.set_seq1("\n".join(lines[start : start + size]))
        # The cheap upper bounds skip most windows before the quadratic ratio().
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            ratio = matcher.ratio()
            if ratio >= 0.6:
                scored.append((ratio, start))
    if not scored:
        return "No similar lines either: check the path, and look at the file with bash (e.g. `grep -n`)."
    best = sorted(scored, key=lambda item: (-item[0], item[1]))[:limit]
    passages = [
        f"lines {start + 1}-{start + size} ({ratio:.0%} similar):\n"
        + _numbered(lines[start : start + size], start + 1)
        for ratio, start in best
    ]
    return "The most similar passages:\n" + "\n".join(passages)


def apply_edit(text: str, old: str, new: str) -> EditOutcome:
    """Replace the one occurrence of ``old`` in ``text`` by ``new``: exact match, no fuzzing.

    A file with CRLF line endings is edited in its own endings: when ``text`` contains ``"\\r\\n"`` and
    ``old`` contains no ``"\\r"``, the newlines of ``old`` and ``new`` are read as ``"\\r\\n"``. Nothing
    else is normalized, so the rest of the file, its final newline included, is kept byte for byte.

    Refused (``text`` None) when ``old`` is empty or equal to ``new``, when it does not occur (the message
    says if only whitespace differs, or shows the closest passages) or occurs several times (the message
    gives each line number).
    """
    if not old:
        return EditOutcome(
            None, "old_str is empty: give the exact text to replace (to make a new file, use create)."
        )
    if old == new:
        return EditOutcome(None, "old_str and new_str are identical: the edit would change nothing.")
    if "\r\n" in text and "\r" not in old:
        old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
    starts = []
    index = text.find(old)
    while index != -1:
        starts.append(index)
        index = text.find(old, index + 1)  # overlapping occurrences are ambiguous too
    if not starts:
        hint = _whitespace_hint(text, old) or _closest(text, old)
        return EditOutcome(None, f"old_str was not found in the file (it must match exactly). {hint}")
    if len(starts) > 1:
        lines = ", ".join(str(_line_of(text, start)) for start in starts)
        return EditOutcome(
            None,
            f"old_str occurs {len(starts)} times, starting at lines {lines}: include more of the "
            "surrounding lines to make it unique.",
        )
    start = starts[0]
    edited = text[:start] + new + text[start + len(old) :]
    first = _line_of(edited, start)
    last = _line_of(edited, start + max(len(new) - 1, 0))
    shown_from = max(1, first - SNIPPET_CONTEXT)
    total = _line_count(edited)
    shown = edited.split("\n")[shown_from - 1 : min(last + SNIPPET_CONTEXT, total)]
    where = f"the new text is at lines {first}-{last}" if new else f"the text was deleted at line {first}"
    return EditOutcome(edited, f"{where} of {total}:\n{_numbered(shown, shown_from)}")


def _resolve(runtime: Runtime, path: str) -> str:
    """``path`` inside the environment: relative to the repository, ``..`` and ``.`` folded away."""
    return posixpath.normpath(posixpath.join(runtime.workdir, path))


def _bash(command: str, runtime: Runtime, timeout: float | None) -> ToolResult:
    if not command.strip():
        return ToolResult("The bash command is empty: give a command to run.", ok=False)
    observation = runtime.run(command, timeout)
    output = observation.output
    if output and not output.endswith("\n"):
        output += "\n"
    if observation.timed_out:
        output += f"[timed out after {observation.duration:.0f} seconds: the command was killed]"
    else:
        output += f"[exit code {observation.exit_code}]"
    if observation.elided:
        output += f"\n[{observation.elided} bytes elided from the middle of the output]"
    if observation.note:
        output += f"\n[{observation.note}]"
    return ToolResult(output, ok=observation.exit_code == 0)


def _edit(path: str, old: str, new: str, runtime: Runtime) -> ToolResult:
    if not path.strip() or path.endswith("/"):
        return ToolResult(f"edit needs the path of a file, not {path!r}.", ok=False)
    try:
        data = runtime.read_file(_resolve(runtime, path))
    except FileNotFoundError:
        return ToolResult(f"{path} does not exist: to make a new file, use create.", ok=False)
    except IsADirectoryError:
        return ToolResult(f"{path} is a directory: edit changes a file.", ok=False)
    except OSError as exc:
        return ToolResult(f"{path} cannot be read: {exc}", ok=False)
    if len(data) > MAX_EDIT_BYTES:
        return ToolResult(
            f"{path} is {len(data) / 2**20:.1f} MB, too large for edit (at most "
            f"{MAX_EDIT_BYTES // 2**20} MB): change it with bash (e.g. sed).",
            ok=False,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ToolResult(f"{path} is a binary file (not UTF-8 text): use bash to change it.", ok=False)
    outcome = apply_edit(text, old, new)
    if outcome.text is None:
        return ToolResult(f"{path} was not changed: {outcome.message}", ok=False)
    runtime.write_file(_resolve(runtime, path), outcome.text.encode("utf-8"))
    return ToolResult(f"Edited {path}: {outcome.message}", ok=True)


def _create(path: str, content: str, runtime: Runtime) -> ToolResult:
    if not path.strip() or path.endswith("/"):
        return ToolResult(f"create needs the path of a file, not {path!r}.", ok=False)
    resolved = _resolve(runtime, path)
    if runtime.exists(resolved):
        return ToolResult(
            f"{path} already exists: change it with edit (create only makes new files).", ok=False
        )
    try:
        runtime.write_file(resolved, content.encode("utf-8"))
    except OSError as exc:
        return ToolResult(f"{path} cannot be created: {exc}", ok=False)
    return ToolResult(f"Created {path} ({_line_count(content)} lines).", ok=True)


def _submit(runtime: Runtime, base: str) -> ToolResult:
    try:
        patch = runtime.diff(base)
    except DiffError as exc:
        return ToolResult(f"Cannot submit: the repository's changes cannot be read. {exc}", ok=False)
    if not patch.strip():
        return ToolResult(
            "No changes to submit: the repository is identical to its starting state. Make your changes "
            "(edit, create, bash), then submit.",
            ok=False,
        )
    files = []
    for patched in PatchSet(patch):
        if patched.is_added_file:
            files.append(f"{patched.path} (added)")
        elif patched.is_removed_file:
            files.append(f"{patched.path} (deleted)")
        else:
            files.append(patched.path)
    return ToolResult(
        f"Submitted a patch changing {len(files)} file(s): {', '.join(files)}.",
        ok=True,
        submitted=True,
        patch=patch,
    )


def execute(
    call: ToolCall, runtime: Runtime, *, timeout: float | None = None, base: str = "HEAD"
) -> ToolResult:
    """Run ``call`` in ``runtime``: ``timeout`` bounds a bash command, ``base`` is what submit diffs against.

    A call the tool refuses (bad arguments, missing file, ambiguous edit, nothing to submit) is a result
    with ``ok`` False; ``envs.runtime.EnvironmentDied`` propagates, being the infrastructure's failure.
    """
    try:
        check_arguments(call.name, call.arguments)
    except FormatError as exc:
        return ToolResult(str(exc), ok=False)
    args = call.arguments
    if call.name == "bash":
        return _bash(args["command"], runtime, timeout)
    if call.name == "edit":
        return _edit(args["path"], args["old_str"], args["new_str"], runtime)
    if call.name == "create":
        return _create(args["path"], args["content"], runtime)
    return _submit(runtime, base)
