"""Policy servers (oracle, replay) over real HTTP on 127.0.0.1, with tasks and episodes in a SQLite store.

The oracle's episodes run for real: a git repository in ``tmp_path`` stands in for the environment
(``LocalRuntime``: bash in a subprocess, files on disk) and ``tools.execute`` runs every call, so the
observations the oracle reads are the tools' own and its tests really fail, then pass.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from unidiff import PatchSet

from core.errors import ForagerError
from envs.runtime import Observation
from forager.policies.oracle import oracle_action, oracle_app
from forager.policies.replay import replay_app
from forager.policies.server import start_in_thread
from forager.prompts import Prompts
from storage.models import Episode, EpisodeStatus, Image, ImageStatus, Step, Task, TaskKind
from storage.store import Store
from tools.calls import ToolCall, parse_cwm, parse_openai, render_cwm
from tools.definitions import cwm_tool_docs, openai_tools
from tools.execute import ToolResult, apply_edit, execute

TEST_COMMAND = f"{shlex.quote(sys.executable)} -m pytest -p no:cacheprovider -q tests"

CALC_BROKEN = '''\
def add(a, b):
    """The sum of a and b."""
    return a - b


def double(x):
    return 2 * x


def triple(x):
    return 3 * x


def quadruple(x):
    return 4 * x


def half(x):
    return x / 2


def scale(values, factor):
    """Each value times factor."""
    return [value + factor for value in values]
'''
CALC_FIXED = CALC_BROKEN.replace("a - b", "a + b").replace("value + factor", "value * factor")
CALC_TESTS = """\
import pytest

from calc import add, double, scale


def test_add():
    assert add(2, 3) == 5


@pytest.mark.parametrize("factor", [2, 3])
def test_scale(factor):
    assert scale([1, 2], factor) == [factor, 2 * factor]


def test_double():
    assert double(4) == 8
"""
CALC_F2P = [
    "tests/test_calc.py::test_add",
    "tests/test_calc.py::test_scale[2]",
    "tests/test_calc.py::test_scale[3]",
]

# The fix of two() has the same text, context included, as the correct one(): an edit cannot place it.
_BLOCK = (
    "    total = 0\n"
    + "    total += 1\n" * 3
    + "    total += 2\n"
    + "    total += 1\n" * 3
    + "    return total\n"
)
COUNTS_BROKEN = f'''\
def bump(total):
    """One more."""
    return total


def one():
{_BLOCK}

def two():
{_BLOCK}'''
_ONE, _TWO = COUNTS_BROKEN.split("def two():")
COUNTS_FIXED = (
    _ONE.replace('"""One more."""\n', '"""One more."""\n    total += 1\n')
    + "def two():"
    + _TWO.replace("total += 2", "total += 20")
)
COUNTS_TESTS = """\
from counts import bump, one, two


def test_bump():
    assert bump(1) == 2


def test_one():
    assert one() == 8


def test_two():
    assert two() == 26
"""


# ---- the environment: a local git checkout -----------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=forager", "-c", "user.email=forager@example.com", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


class LocalRuntime:
    """The ``Runtime`` protocol over a local git checkout: each command a fresh bash, files on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = str(root)

    def run(self, command: str, timeout: float | None = None) -> Observation:
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        return Observation(done.stdout, done.returncode, time.monotonic() - started)

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def write_file(self, path: str, content: bytes) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def diff(self, base: str = "HEAD") -> str:
        _git(self.root, "add", "-A")
        return _git(self.root, "diff", "--cached", base)

    def close(self) -> None:
        pass


def _checkout(root: Path, module: str, broken: str, fixed: str, tests: str) -> str:
    """A git repository at ``root`` in the broken state, committed; returns the gold patch (git's diff)."""
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")  # pins pytest's rootdir here
    (root / "tests" / f"test_{module}.py").write_text(tests)
    (root / f"{module}.py").write_text(broken)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "broken")
    (root / f"{module}.py").write_text(fixed)
    gold = _git(root, "diff")
    _git(root, "checkout", "-q", "--", ".")
    return gold


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'forager.db'}") as opened:
        yield opened


@pytest.fixture
def image(store: Store) -> Image:
    repository = store.get_or_create_repository("/src/calc", "calc")
    image = Image(
        repository_id=repository.id,
        tag="forager/calc:1",
        status=ImageStatus.READY,
        base_image="python:3.11-slim",
        recipe={},
        recipe_hash="0",
        test_command=TEST_COMMAND,
    )
    return store.save_image(image)


def _task(
    store: Store, image: Image, instance_id: str, gold: str, fail_to_pass: list[str], function: str
) -> Task:
    task = Task(
        instance_id=instance_id,
        kind=TaskKind.MUTATE_FIX,
        image_id=image.id,
        gold_patch=gold,
        problem_statement="The tests fail.",
        fail_to_pass=fail_to_pass,
        meta={"function": function},
    )
    store.add_tasks([task])
    return store.get_task(instance_id)


@pytest.fixture
def calc(tmp_path: Path, store: Store, image: Image) -> tuple[Task, Path]:
    root = tmp_path / "calc"
    gold = _checkout(root, "calc", CALC_BROKEN, CALC_FIXED, CALC_TESTS)
    return _task(store, image, "calc-1", gold, CALC_F2P, "add"), root


@pytest.fixture
def counts(tmp_path: Path, store: Store, image: Image) -> tuple[Task, Path]:
    root = tmp_path / "counts"
    gold = _checkout(root, "counts", COUNTS_BROKEN, COUNTS_FIXED, COUNTS_TESTS)
    f2p = ["tests/test_counts.py::test_bump", "tests/test_counts.py::test_two"]
    return _task(store, image, "counts-1", gold, f2p, "bump"), root


@pytest.fixture
def serve_oracle(store: Store) -> Iterator[str]:
    base_url, stop = start_in_thread(oracle_app(store))
    yield base_url
    stop()


# ---- talking to a server -----------------------------------------------------------------------------

# Loopback only: a proxy from the environment must not be asked.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _complete(
    base_url: str, messages: list[dict], function_calling: bool, model: str = "oracle"
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"model": model, "messages": messages}
    if function_calling:
        body["tools"] = openai_tools()
    return _request(f"{base_url}/chat/completions", json.dumps(body).encode())


def _prompt(instance_id: str) -> list[dict[str, Any]]:
    system, task = Prompts.load().render(
        workdir="/repo",
        tool_docs=cwm_tool_docs(),
        instance_id=instance_id,
        problem_statement="The tests fail.",
        test_command=TEST_COMMAND,
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": task}]


class Run:
    """One episode against a policy server: ask, parse, execute, observe, as the agent does."""

    def __init__(self, base_url: str, instance_id: str, function_calling: bool, root: Path) -> None:
        self.base_url, self.function_calling = base_url, function_calling
        self.runtime = LocalRuntime(root)
        self.messages = _prompt(instance_id)
        self.replies: list[dict[str, Any]] = []
        self.calls: list[ToolCall] = []
        self.results: list[ToolResult] = []

    @property
    def done(self) -> bool:
        return bool(self.results) and self.results[-1].submitted

    def ask(self) -> tuple[dict[str, Any], ToolCall]:
        """The next reply and its call, appended to the conversation (not executed)."""
        status, reply = _complete(self.base_url, self.messages, self.function_calling)
        assert status == 200, reply
        message = reply["choices"][0]["message"]
        self.messages.append(message)
        if self.function_calling:
            call = parse_openai(message["tool_calls"])
        else:
            assert "tool_calls" not in message
            call = parse_cwm(message["content"])
        return reply, call

    def step(self) -> None:
        reply, call = self.ask()
        result = execute(call, self.runtime, timeout=120)
        if self.function_calling:
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": result.output})
        else:
            self.messages.append({"role": "user", "content": result.output})
        self.replies.append(reply)
        self.calls.append(call)
        self.results.append(result)


def _run_all(*runs: Run, max_turns: int = 15) -> None:
    """Run the episodes in lockstep, one turn each in turn: one server, interleaved conversations."""
    for _ in range(max_turns):
        for run in runs:
            if not run.done:
                run.step()
    assert all(run.done for run in runs), [run.calls for run in runs]


def _bash(command: str) -> ToolCall:
    return ToolCall("bash", {"command": command})


def _without_id(call: ToolCall) -> ToolCall:
    return ToolCall(call.name, call.arguments)


# ---- the protocol ------------------------------------------------------------------------------------


def test_models_lists_the_policy(serve_oracle: str) -> None:
    status, body = _request(f"{serve_oracle}/models")
    assert status == 200
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [("oracle", "model", "forager")]


def test_a_server_starts_on_loopback_and_stops(store: Store) -> None:
    base_url, stop = start_in_thread(oracle_app(store))
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    stop()
    with pytest.raises(urllib.error.URLError):
        _OPENER.open(f"{base_url}/models", timeout=5)


@pytest.mark.parametrize("function_calling", [True, False])
def test_a_conversation_without_a_task_or_with_an_unknown_one_is_refused(
    serve_oracle: str, function_calling: bool
) -> None:
    messages = [
        {"role": "user", "content": "Fix the bug."},
        {"role": "assistant", "content": "Task id: calc-1"},
        {"role": "tool", "tool_call_id": "call_1", "content": "forager/templates/task.txt:1:Task id: calc-1"},
    ]
    status, reply = _complete(serve_oracle, messages, function_calling)
    assert status == 400
    assert "names no task" in reply["error"]["message"]
    assert "`Task id: <instance_id>`" in reply["error"]["message"]

    status, reply = _complete(serve_oracle, _prompt("nope-7"), function_calling)
    assert status == 400
    assert "unknown task 'nope-7'" in reply["error"]["message"]


# ---- the oracle --------------------------------------------------------------------------------------


def test_the_oracle_solves_a_task_in_both_formats_over_interleaved_conversations(
    serve_oracle: str, calc: tuple[Task, Path], tmp_path: Path
) -> None:
    task, root = calc
    # Two copies of the checkout, one per episode: the conversations share the server, not the files.
    second = tmp_path / "calc-cwm"
    subprocess.run(["cp", "-a", str(root), str(second)], check=True)
    tools_run = Run(serve_oracle, task.instance_id, True, root)
    cwm_run = Run(serve_oracle, task.instance_id, False, second)
    _run_all(tools_run, cwm_run)

    test = _bash(
        f"{shlex.quote(sys.executable)} -m pytest -p no:cacheprovider -q tests/test_calc.py::test_add "
        "'tests/test_calc.py::test_scale[2]' 'tests/test_calc.py::test_scale[3]'"
    )
    for run in (tools_run, cwm_run):
        calls = [_without_id(call) for call in run.calls]
        outputs = [result.output for result in run.results]
        assert [call.name for call in calls] == ["bash", "bash", "bash", "edit", "edit", "bash", "submit"]
        assert calls[0] == _bash("grep -rn add --include='*.py' . | head -20")
        assert "./calc.py:1:def add(a, b):" in outputs[0]
        assert calls[1] == _bash("sed -n '1,16p' calc.py")  # hunk 1 is lines 1-6: ten lines after it
        assert "return a - b" in outputs[1] and "def quadruple" in outputs[1] and "def half" not in outputs[1]
        assert calls[2] == test and calls[5] == test
        assert "3 failed" in outputs[2]
        assert "3 passed" in outputs[5]
        # Each edit's old_str occurs once in the start state, and the two edits make the gold fix.
        text = CALC_BROKEN
        for edit in calls[3:5]:
            assert edit.arguments["path"] == "calc.py"
            assert CALC_BROKEN.count(edit.arguments["old_str"]) == 1
            text = apply_edit(text, edit.arguments["old_str"], edit.arguments["new_str"]).text
        assert text == CALC_FIXED
        assert [result.ok for result in run.results] == [True, True, False, True, True, True, True]
        assert run.results[-1].patch == task.gold_patch

    # The reply shapes: function calling gets tool_calls, the CWM format a thought and a block.
    tools_reply, cwm_reply = tools_run.replies[0], cwm_run.replies[0]
    for reply in (tools_reply, cwm_reply):
        assert reply["id"].startswith("chatcmpl-") and reply["object"] == "chat.completion"
        assert reply["model"] == "oracle" and isinstance(reply["created"], int)
        usage = reply["usage"]
        assert usage["prompt_tokens"] > 100 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    (choice,) = tools_reply["choices"]
    assert choice["finish_reason"] == "tool_calls"
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["id"].startswith("call_") and tool_call["type"] == "function"
    assert json.loads(tool_call["function"]["arguments"]) == calls[0].arguments
    thought = choice["message"]["content"]
    assert thought and "<tool:" not in thought
    (choice,) = cwm_reply["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == f"{thought}\n{render_cwm(calls[0])}"

    # A turn after the submit (say the submit was refused) submits again.
    _reply, call = cwm_run.ask()
    assert call == ToolCall("submit", {})


@pytest.mark.parametrize("function_calling", [True, False])
def test_a_refused_edit_is_followed_by_git_apply_of_the_rest(
    serve_oracle: str, counts: tuple[Task, Path], function_calling: bool
) -> None:
    task, root = counts
    run = Run(serve_oracle, task.instance_id, function_calling, root)
    _run_all(run)

    calls = [_without_id(call) for call in run.calls]
    outputs = [result.output for result in run.results]
    assert [call.name for call in calls] == ["bash", "bash", "bash", "edit", "edit", "bash", "bash", "submit"]
    assert outputs[3].startswith("Edited counts.py:"), "the first hunk's text is unique"
    assert "old_str occurs 2 times" in outputs[4], "the second hunk's text is also one()'s"
    command = calls[5].arguments["command"]
    assert command.startswith("git apply <<'PATCH'\n") and command.endswith("\nPATCH")
    (patched,) = PatchSet(command.split("\n", 1)[1].rsplit("\n", 1)[0] + "\n")
    assert len(patched) == 1, "only the refused hunk, the first one is made already"
    assert str(patched[0]) == str(PatchSet(task.gold_patch)[0][1])
    assert outputs[5] == "[exit code 0]"
    assert calls[6] == calls[2] and "2 passed" in outputs[6]
    assert run.results[-1].patch == task.gold_patch
    assert (root / "counts.py").read_text() == COUNTS_FIXED


def test_a_patch_the_tools_cannot_make_exactly_is_applied_whole_and_a_plain_task_is_looked_at() -> None:
    # "\ No newline at end of file": whole-line edits could not keep the file without a final newline.
    gold = (
        "diff --git a/pkg/a.py b/pkg/a.py\n--- a/pkg/a.py\n+++ b/pkg/a.py\n@@ -20,2 +20,2 @@\n"
        " x = 1\n-y = 2\n\\ No newline at end of file\n+y = 3\n\\ No newline at end of file\n"
    )
    task = Task(
        instance_id="t-1",
        gold_patch=gold,
        fail_to_pass=["tests/test_a.py::test_a"],
        meta={},  # no function: the first changed file is looked at instead
        image=Image(test_command="pytest -q tests"),
    )
    messages = _prompt("t-1")
    calls = []
    for _ in range(6):
        thought, call = oracle_action(task, messages)
        assert thought
        calls.append(call)
        messages += [{"role": "assistant", "content": thought}, {"role": "user", "content": "[exit code 0]"}]
    assert calls[:3] == [
        _bash("ls -l pkg && head -n 40 pkg/a.py"),
        _bash("sed -n '10,31p' pkg/a.py"),
        _bash("pytest -q tests/test_a.py::test_a"),
    ]
    assert calls[3] == _bash(f"git apply <<'PATCH'\n{gold}PATCH")
    assert calls[4:] == [calls[2], ToolCall("submit", {})]


# ---- replay ------------------------------------------------------------------------------------------

EDIT = ToolCall("edit", {"path": "calc.py", "old_str": "a - b", "new_str": "a + b"})
CREATE = ToolCall("create", {"path": "notes.txt", "content": "no final newline"})


@pytest.fixture
def episode(store: Store, calc: tuple[Task, Path]) -> Episode:
    task, _root = calc
    now = datetime.now(UTC)
    recorded = Episode(
        task_id=task.id,
        model="some-model",
        action_format="cwm_text",
        status=EpisodeStatus.COMPLETED,
        exit_reason="submitted",
        started_at=now,
        finished_at=now,
    )
    steps = [
        Step(index=0, thought="Let me look.", action={"tool": "bash", "arguments": {"command": "ls"}}),
        Step(index=1, thought=None, action="I'll edit <tool: edit>calc.py oops"),
        # A CWM turn records its whole message as the thought, the block included.
        Step(
            index=2,
            thought=f"Fix the sign.\n\n{render_cwm(EDIT)}",
            action={"tool": "edit", "arguments": EDIT.arguments},
        ),
        Step(index=3, thought="", action={"tool": "create", "arguments": CREATE.arguments}),
    ]
    for step in steps:
        step.observation = "recorded"
    return store.save_episode(recorded, steps)


def test_replay_answers_the_recorded_actions_in_order_then_submits(store: Store, episode: Episode) -> None:
    base_url, stop = start_in_thread(replay_app(store, episode.id))
    try:
        status, body = _request(f"{base_url}/models")
        assert status == 200 and [m["id"] for m in body["data"]] == ["replay"]
        for function_calling in (True, False):
            messages = _prompt("calc-1")
            replies = []
            for _ in range(6):
                status, reply = _complete(base_url, messages, function_calling, "replay")
                replies.append((status, reply))
                message = (
                    reply["choices"][0]["message"] if status == 200 else {"role": "assistant", "content": ""}
                )
                messages += [message, {"role": "user", "content": "observed"}]
            messages_of = [reply["choices"][0]["message"] for status, reply in replies if status == 200]

            if function_calling:
                assert [status for status, _ in replies] == [200] * 6
                first, raw, edit, create, submit, again = messages_of
                assert first["content"] == "Let me look."
                assert _without_id(parse_openai(first["tool_calls"])) == _bash("ls")
                assert edit["content"] == "Fix the sign."
                assert _without_id(parse_openai(edit["tool_calls"])) == EDIT
                assert _without_id(parse_openai(create["tool_calls"])) == CREATE
            else:
                # CWM cannot write a file without a final newline: that turn is refused, with the reason.
                assert [status for status, _ in replies] == [200, 200, 200, 400, 200, 200]
                assert "cannot be written in CWM's text format" in replies[3][1]["error"]["message"]
                first, raw, edit, submit, again = messages_of
                assert first["content"] == f"Let me look.\n{render_cwm(_bash('ls'))}"
                assert edit["content"] == f"Fix the sign.\n{render_cwm(EDIT)}"
            assert raw == {"role": "assistant", "content": "I'll edit <tool: edit>calc.py oops"}
            assert replies[1][1]["choices"][0]["finish_reason"] == "stop"
            for message in (submit, again):
                call = (
                    parse_openai(message["tool_calls"]) if function_calling else parse_cwm(message["content"])
                )
                assert call.name == "submit"
    finally:
        stop()


def test_replay_refuses_another_task_and_an_unknown_episode(store: Store, episode: Episode) -> None:
    base_url, stop = start_in_thread(replay_app(store, episode.id))
    try:
        status, reply = _complete(base_url, _prompt("other-9"), True, "replay")
    finally:
        stop()
    assert status == 400
    assert f"replays episode {episode.id} of task 'calc-1'" in reply["error"]["message"]
    assert "'other-9'" in reply["error"]["message"]
    with pytest.raises(ForagerError, match="no episode 'missing'"):
        replay_app(store, "missing")
