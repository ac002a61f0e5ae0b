"""The oracle policy: solves a task from its gold patch, one tool call a turn, as a competent agent would.

Its turns, for the task the conversation names (``Task id: ...``):

1. look around: grep the repository for the function the task is about (``task.meta["function"]``), or
   else list the directory of the first file the gold patch changes and show the file's head;
2. read the code around the first change: ``sed -n 'A,Bp' FILE``, ten lines either side of the hunk;
3. run the failing tests: the image's test command with the FAIL_TO_PASS ids in place of its test paths;
4. fix: one ``edit`` per hunk of the gold patch (``old_str`` the hunk's context and removed lines,
   ``new_str`` its context and added lines, whole lines), one ``create`` per added file, one ``rm`` per
   deleted file. When one of these is refused (an ``old_str`` that occurs twice, say), the next turn
   applies that change and all the later ones with ``git apply``, which places hunks by line number.
   A gold patch the tools cannot reproduce exactly (binary files, renames, mode changes, a missing final
   newline, text CWM's format cannot express) is applied with one ``git apply`` from the start;
5. run the failing tests again;
6. submit; any later turn (a refused submit) submits again.

Each answer is computed from the task, the turn number and the observations in the conversation, so the
oracle keeps no state between requests. For an imported issue the failing tests may come with the test
patch, which grading applies and the agent never sees: steps 3 and 5 then report them missing, as they
would to any agent.
"""

from __future__ import annotations

import copy
import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError
from unidiff.patch import Hunk

from envs.grading import GradingError, pytest_base
from forager.policies.conversation import (
    Action,
    PolicyError,
    conversation_task_id,
    observations,
    turn_number,
)
from forager.policies.server import policy_app
from storage.models import Task
from storage.store import Store
from tools.calls import ToolCall, render_cwm

#: Lines shown before and after the first hunk when reading the code.
READ_MARGIN = 10
#: The test command when the image records none.
DEFAULT_TEST_COMMAND = "python -m pytest"
#: File mode of a file ``create`` can make exactly (a regular, non-executable file).
_PLAIN_MODE = "100644"
_SUBMIT = Action(
    "The fix is in place and the failing tests were run again, so I'll submit.", ToolCall("submit", {})
)


@dataclass(frozen=True)
class _Change:
    """One fix turn: a tool call that makes one piece of the gold patch."""

    thought: str
    call: ToolCall
    done: str
    """Text the observation holds when the call did its work."""
    file: PatchedFile
    hunks: tuple[Hunk, ...]
    """The piece of ``file`` the call makes (every hunk for an added or deleted file)."""


def oracle_action(task: Task, messages: list[dict[str, Any]]) -> Action:
    """The oracle's action for ``task`` at the conversation's turn (see the module docstring).

    Raises:
        PolicyError: the task has no gold patch, or one that is not a unified diff.
    """
    if not task.gold_patch.strip():
        raise PolicyError(f"task {task.instance_id} has no gold patch: the oracle has no fix to make")
    try:
        patch = PatchSet(task.gold_patch)
    except UnidiffParseError as exc:
        raise PolicyError(f"the gold patch of task {task.instance_id} is not a unified diff: {exc}") from None
    test = ToolCall("bash", {"command": _test_command(task)})
    opening = [
        _look(task, patch),
        *_read(patch),
        Action("Let me run the failing tests to see how they fail.", test),
    ]
    fix = _fix(patch, task.gold_patch, observations(messages)[len(opening) :])
    rerun = Action("Let me run the failing tests again to check the fix.", test)
    script = [*opening, *fix, rerun, _SUBMIT]
    turn = turn_number(messages)
    return script[turn] if turn < len(script) else _SUBMIT


def oracle_app(store: Store) -> web.Application:
    """The oracle served as the OpenAI-compatible model ``oracle``, finding tasks in ``store``."""

    def policy(messages: list[dict[str, Any]]) -> Action:
        instance_id = conversation_task_id(messages)
        task = store.get_task(instance_id)
        if task is None:
            raise PolicyError(
                f"unknown task {instance_id!r}: {store.url} holds no task with this instance id (the oracle "
                "answers for tasks of its own store; list them with `forager tasks list`)"
            )
        return oracle_action(task, messages)

    return policy_app("oracle", policy)


# ---- opening: look, read, test -----------------------------------------------------------------------


def _plain(file: PatchedFile) -> bool:
    """Whether the file's name and change are plain text the tools can address (no binary, rename or
    git-quoted name)."""
    return not (file.is_binary_file or file.is_rename or '"' in file.source_file + file.target_file)


def _look(task: Task, patch: PatchSet) -> Action:
    function = task.meta.get("function")
    if function:
        name = function.rsplit(".", 1)[-1]  # a qualname: "Class.method" is defined as "method"
        command = f"grep -rn {shlex.quote(name)} --include='*.py' . | head -20"
        return Action(
            f"Let me find `{name}` and the places that use it.", ToolCall("bash", {"command": command})
        )
    existing = [file for file in patch if _plain(file) and not file.is_added_file]
    if not existing:
        return Action("Let me look at the repository.", ToolCall("bash", {"command": "ls -la"}))
    path = existing[0].path
    command = f"ls -l {shlex.quote(posixpath.dirname(path) or '.')} && head -n 40 {shlex.quote(path)}"
    return Action(f"Let me look at {path}.", ToolCall("bash", {"command": command}))


def _read(patch: PatchSet) -> list[Action]:
    """The turn reading the code around the first hunk of a file the start state has; none if no such."""
    readable = [file for file in patch if _plain(file) and not file.is_added_file and len(file)]
    if not readable:
        return []
    file, hunk = readable[0], readable[0][0]
    first = max(1, hunk.source_start - READ_MARGIN)
    last = hunk.source_start + max(hunk.source_length, 1) - 1 + READ_MARGIN
    command = f"sed -n '{first},{last}p' {shlex.quote(file.path)}"
    return [
        Action(f"Let me read lines {first}-{last} of {file.path}.", ToolCall("bash", {"command": command}))
    ]


def _test_command(task: Task) -> str:
    """The image's test command running the FAIL_TO_PASS ids instead of its own test paths."""
    command = task.image.test_command or DEFAULT_TEST_COMMAND
    try:
        words = pytest_base(command)
    except GradingError:
        # Not a plain pytest command: the ids can only be added to it.
        return f"{command} {shlex.join(task.fail_to_pass)}"
    return shlex.join([*words, *task.fail_to_pass])


# ---- the fix -----------------------------------------------------------------------------------------


def _fix(patch: PatchSet, gold: str, seen: list[str]) -> list[Action]:
    """The fix turns, given what the fix turns taken so far observed (``seen``, from the first fix turn).

    One turn per change while the changes are done; after a refused one, a last turn applying it and the
    rest with ``git apply``.
    """
    changes = _changes(patch)
    if changes is None:
        return [Action("The fix is easiest to make as a patch, so I'll apply it with git.", _git_apply(gold))]
    actions = []
    for index, change in enumerate(changes):
        actions.append(Action(change.thought, change.call))
        if index < len(seen) and change.done not in seen[index]:
            rest = _patch_text(changes[index:])
            thought = "That was refused, so I'll apply the rest of the fix as a patch, placed by line number."
            actions.append(Action(thought, _git_apply(rest)))
            break
    return actions


def _changes(patch: PatchSet) -> list[_Change] | None:
    """One change per hunk (or per added or deleted file); None when the tools cannot make the patch
    exactly, in both call formats."""
    changes: list[_Change] = []
    for file in patch:
        if not _plain(file) or any(line.line_type == "\\" for hunk in file for line in hunk):
            return None  # "\ No newline at end of file": whole-line edits cannot drop a final newline
        path = file.path
        if file.is_added_file:
            if file.target_mode not in (None, _PLAIN_MODE):
                return None
            content = "".join(line.value for hunk in file for line in hunk if line.is_added)
            changes.append(
                _Change(
                    f"I'll create {path}.",
                    ToolCall("create", {"path": path, "content": content}),
                    f"Created {path} (",
                    file,
                    tuple(file),
                )
            )
        elif file.is_removed_file:
            command = f"rm {shlex.quote(path)}"
            changes.append(
                _Change(
                    f"I'll delete {path}.",
                    ToolCall("bash", {"command": command}),
                    "[exit code 0]",
                    file,
                    tuple(file),
                )
            )
        else:
            if file.source_mode != file.target_mode:
                return None
            for hunk in file:
                old = "".join(line.value for line in hunk if line.is_context or line.is_removed)
                new = "".join(line.value for line in hunk if line.is_context or line.is_added)
                if not old:
                    return None  # an insertion without context lines: nothing for edit to find
                call = ToolCall("edit", {"path": path, "old_str": old, "new_str": new})
                line = hunk.source_start
                changes.append(
                    _Change(f"I'll fix {path} at line {line}.", call, f"Edited {path}:", file, (hunk,))
                )
    try:
        for change in changes:
            render_cwm(change.call)
    except ValueError:
        return None
    return changes


def _patch_text(changes: list[_Change]) -> str:
    """The part of the gold patch that ``changes`` make: each file's header and those of its hunks."""
    pieces: dict[int, tuple[PatchedFile, list[Hunk]]] = {}
    for change in changes:
        pieces.setdefault(id(change.file), (change.file, []))[1].extend(change.hunks)
    text = ""
    for file, hunks in pieces.values():
        piece = copy.copy(file)  # a PatchedFile is a list of its hunks: the copy keeps only these
        piece[:] = hunks
        text += str(piece)
    return text


def _git_apply(patch: str) -> ToolCall:
    """A bash call applying ``patch`` with ``git apply``, from a quoted heredoc (no expansion in it)."""
    if not patch.endswith("\n"):
        patch += "\n"
    lines = set(patch.split("\n"))
    end = "PATCH"
    while end in lines:
        end += "_"
    return ToolCall("bash", {"command": f"git apply <<'{end}'\n{patch}{end}"})
