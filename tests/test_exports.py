"""Exports, each read back by the library that consumes the format: ``datasets`` (sft, parquet, cwm),
the official ``swebench`` package (predictions, task instances), mini-swe-agent's own inspector."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from core.progress import ProgressEvent
from forager.conversation import assistant_message, observation_messages, opening_messages
from forager.dedup import NearDuplicateFilter
from forager.exports import FORMATS, ExportError, export, writer
from forager.exports.parquet import SCHEMA
from storage import (
    Episode,
    EpisodeStatus,
    Image,
    ImageStatus,
    Step,
    Store,
    Task,
    TaskKind,
    TaskStatus,
)
from tests.cli import forager
from tools.calls import ToolCall
from tools.definitions import openai_tools

PATCH = "--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1 +1 @@\n-    return a < b\n+    return a <= b\n"
# What breaks naive writers: non-ASCII, a NUL, ANSI escapes, CRLF, and a lone surrogate (an undecodable
# byte of tool output, as the store keeps it).
ODD_OUTPUT = "tests/test_ünï.py::test_日本 FAILED ✗\x00\x1b[31mred\x1b[0m\r\n\udcff end"


def _now(minutes: float = 0) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def _image(store: Store, source: str, name: str, tag: str) -> Image:
    repository = store.get_or_create_repository(source, name, "0" * 40)
    return store.save_image(
        Image(
            repository_id=repository.id,
            tag=tag,
            status=ImageStatus.READY,
            base_image="forager/base:bookworm",
            recipe={"install": ["pip install -e ."]},
            recipe_hash="r",
            test_command="python -m pytest",
        )
    )


def _task(store: Store, image: Image, instance_id: str, **fields: object) -> Task:
    values: dict[str, object] = {
        "kind": TaskKind.ISSUE_FIX,
        "status": TaskStatus.VERIFIED,
        "problem_statement": "less_than(2, 2) is wrong.",
        "gold_patch": PATCH,
        "fail_to_pass": ["tests/test_ops.py::test_equal"],
        "pass_to_pass": ["tests/test_ops.py::test_less", "tests/test_ops.py::test_more"],
    }
    values.update(fields)
    (task,) = store.add_tasks([Task(instance_id=instance_id, image_id=image.id, **values)])
    return task


def _episode(
    store: Store,
    task: Task,
    actions: list[dict | str],
    *,
    action_format: str = "function_calling",
    model: str = "qwen-7b",
    policy: str | None = None,
    resolved: bool | None = True,
    exit_reason: str = "submitted",
    observation: str = "ok",
    minutes: float = 0,
) -> Episode:
    """Store an episode whose steps take ``actions`` (a str is a malformed turn's raw text), with the
    messages the agent records."""
    system, user = "You are a careful engineer.", f"Task id: {task.instance_id}\n\nFix it."
    steps = []
    for index, action in enumerate(actions):
        if isinstance(action, str):
            message = {"role": "assistant", "content": action}
        else:
            call = ToolCall(action["tool"], action["arguments"])
            message = assistant_message(action_format, f"thought {index}", call, call_id=f"call_{index}_x")
        steps.append(
            Step(
                index=index,
                thought=None if isinstance(action, str) else f"thought {index}",
                action=action,
                observation=observation,
                message=message,
                prompt_tokens=100,
                completion_tokens=10,
            )
        )
    episode = Episode(
        task_id=task.id,
        model=model,
        policy=policy,
        action_format=action_format,
        status=EpisodeStatus.COMPLETED,
        exit_reason=exit_reason,
        resolved=resolved,
        reward=None if resolved is None else float(resolved),
        prompt_tokens=100 * len(actions),
        completion_tokens=10 * len(actions),
        final_patch=PATCH if resolved else "",
        grade={"tests": {"tests/test_ops.py::test_equal": "passed"}} if resolved is not None else None,
        config={"action_format": action_format, "max_turns": 30, "temperature": 0.7, "error": None},
        system_prompt=system,
        task_prompt=user,
        tools=openai_tools() if action_format == "function_calling" else None,
        started_at=_now(minutes - 1),
        finished_at=_now(minutes),
        created_at=_now(minutes),
    )
    return store.save_episode(episode, steps)


def _bash(command: str) -> dict:
    return {"tool": "bash", "arguments": {"command": command}}


SOLVE = [
    _bash("grep -rn 'def less_than' calc/"),
    {"tool": "edit", "arguments": {"path": "calc/ops.py", "old_str": "a < b", "new_str": "a <= b"}},
    _bash("python -m pytest tests/test_ops.py -q"),
    {"tool": "submit", "arguments": {}},
]


@pytest.fixture
def filled(store: Store) -> Store:
    """Two repositories, an issue-fix and a mutate-fix task, and episodes of both formats."""
    calc = _image(store, "https://github.com/acme/calc.git", "acme__calc", "forager/acme__calc:1")
    issue = _task(store, calc, "acme__calc-7")
    attrs = _image(store, "pypi:attrs==23.1.0", "attrs", "forager/attrs:23.1.0")
    mutant = _task(
        store,
        attrs,
        "attrs.comparison.3f2a1",
        kind=TaskKind.MUTATE_FIX,
        setup_patch=PATCH.replace("<=", "<<"),
        meta={"operator": "comparison_flip"},
        operator="comparison_flip",
    )
    _episode(store, issue, SOLVE, minutes=0)
    _episode(
        store,
        issue,
        [_bash("ls"), "I think <tool: bash without closing", _bash("cat calc/ops.py")],
        action_format="cwm_text",
        resolved=False,
        exit_reason="max_turns",
        observation=ODD_OUTPUT,
        minutes=1,
    )
    _episode(store, mutant, SOLVE, model="oracle", policy="oracle", minutes=2)
    _episode(store, mutant, [], resolved=None, exit_reason="infra_error", minutes=3)
    return store


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- sft ---------------------------------------------------------------------------------------------


def test_sft_loads_with_datasets_into_one_schema_and_holds_the_conversation(filled: Store, tmp_path: Path):
    path = tmp_path / "missing" / "dir" / "sft.jsonl"
    summary = export(filled.iter_episodes(), "sft", path)
    assert (summary.read, summary.written, summary.resolved, summary.skipped_by_writer) == (4, 3, 2, 1)
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    # datasets fixes the types from the first rows it reads: read one row at a time, the later rows
    # (another format, a policy, an operator) must still fit.
    one_by_one = datasets.load_dataset("json", data_files=str(path), split="train", chunksize=1)
    assert one_by_one.features == ds.features and one_by_one.to_list() == ds.to_list()
    assert len(ds) == 3
    # The messages come back exactly as written; no column is keyed by tests or tool parameters.
    assert ds.features["messages"] == datasets.List(datasets.Json())
    for column in ("tools", "grade", "generation_config", "model_patch", "repository", "policy", "operator"):
        assert ds.features[column] == datasets.Value("string"), column
    for column, kind in (
        ("resolved", "bool"),
        ("graded", "bool"),
        ("reward", "float64"),
        ("n_steps", "int64"),
    ):
        assert ds.features[column] == datasets.Value(kind), column

    first = ds[0]
    assert first["repository"] == "acme/calc"  # the owner/name of the source URL, not the tag's spelling
    assert json.loads(first["tools"]) == openai_tools()
    assert [m["role"] for m in first["messages"]] == ["system", "user"] + ["assistant", "tool"] * 4
    edit = first["messages"][4]["tool_calls"][0]
    assert edit["id"] == "call_1_x" and edit["function"]["name"] == "edit"
    assert json.loads(edit["function"]["arguments"])["new_str"] == "a <= b"
    assert first["messages"][5] == {"role": "tool", "tool_call_id": "call_1_x", "content": "ok"}
    assert json.loads(first["grade"]) == {"tests": {"tests/test_ops.py::test_equal": "passed"}}

    cwm = ds[1]
    assert cwm["tools"] == "[]" and cwm["exit_reason"] == "max_turns" and cwm["resolved"] is False
    assert cwm["messages"][2] == {
        "role": "assistant", "content": "thought 0\n<tool: bash>\nls\n</tool>", "tool_calls": []
    }  # fmt: skip
    assert cwm["messages"][4] == {
        "role": "assistant", "content": "I think <tool: bash without closing", "tool_calls": []
    }  # fmt: skip
    assert cwm["messages"][3]["content"] == ODD_OUTPUT.replace("\udcff", "\ufffd")
    oracle = ds[2]
    assert (oracle["operator"], oracle["model"], oracle["policy"]) == ("comparison_flip", "oracle", "oracle")
    assert json.loads(first["generation_config"]) == {
        "action_format": "function_calling", "max_turns": 30, "temperature": 0.7
    }  # fmt: skip


def test_sft_messages_are_the_conversation_the_agent_kept(filled: Store, tmp_path: Path):
    """The exported messages equal those the agent grows, built by the same functions turn by turn."""
    (episode,) = [e for e in filled.iter_episodes() if e.action_format == "function_calling" and e.n_steps][
        :1
    ]
    expected = opening_messages(episode.system_prompt, episode.task_prompt)
    for step in episode.steps:
        expected += [step.message, *observation_messages("function_calling", step.message, step.observation)]
    export([episode], "sft", tmp_path / "one.jsonl")
    assert _rows(tmp_path / "one.jsonl")[0]["messages"] == expected


# ---- selection ---------------------------------------------------------------------------------------


def test_resolved_only_and_max_per_task_select_in_store_order(filled: Store, tmp_path: Path):
    events: list[ProgressEvent] = []
    summary = export(
        filled.iter_episodes(),
        "sft",
        tmp_path / "r.jsonl",
        resolved_only=True,
        total=4,
        progress=events.append,
    )
    assert (events[0].completed, events[-1].completed, events[-1].total) == (0, 4, 4)
    assert events[-1].message == "2 written of 4 read"
    assert [r["instance_id"] for r in _rows(tmp_path / "r.jsonl")] == [
        "acme__calc-7",
        "attrs.comparison.3f2a1",
    ]
    assert summary.skipped_unresolved == 2

    summary = export(filled.iter_episodes(), "sft", tmp_path / "k.jsonl", max_per_task=1)
    rows = _rows(tmp_path / "k.jsonl")
    assert [(r["instance_id"], r["model"]) for r in rows] == [
        ("acme__calc-7", "qwen-7b"), ("attrs.comparison.3f2a1", "oracle")
    ]  # fmt: skip
    assert summary.skipped_max_per_task == 2
    assert summary.to_json()["per_repository"]["acme/calc"] == {
        "episodes": 1,
        "resolved": 1,
        "resolve_rate": 1.0,
    }


def test_dedup_drops_a_near_duplicate_of_the_same_task_only(store: Store, tmp_path: Path):
    image = _image(store, "https://github.com/acme/calc", "acme__calc", "forager/acme__calc:1")
    one, two = _task(store, image, "calc-1"), _task(store, image, "calc-2")
    _episode(store, one, SOLVE, minutes=0)
    _episode(store, one, [*SOLVE[:2], _bash("python -m pytest tests/test_ops.py -q -x"), SOLVE[3]], minutes=1)
    _episode(store, one, [_bash(f"sed -n {i},{i + 9}p calc/core.py") for i in range(0, 60, 10)], minutes=2)
    _episode(store, two, SOLVE, minutes=3)  # the same actions, but another task
    dedup = NearDuplicateFilter()
    summary = export(store.iter_episodes(), "sft", tmp_path / "d.jsonl", dedup=dedup)
    assert summary.dropped_duplicates == 1 and summary.written == 3
    assert [r["instance_id"] for r in _rows(tmp_path / "d.jsonl")] == ["calc-1", "calc-1", "calc-2"]
    assert summary.to_json()["dedup"]["per_repository"] == {"acme/calc": {"kept": 3, "dropped": 1}}


def test_dedup_reading_task_by_task_forgets_each_task_once_it_has_passed(store: Store, tmp_path: Path):
    image = _image(store, "https://github.com/acme/calc", "acme__calc", "forager/acme__calc:1")
    one, two = _task(store, image, "calc-1"), _task(store, image, "calc-2")
    near = [*SOLVE[:2], _bash("python -m pytest tests/test_ops.py -q -x"), SOLVE[3]]
    # Interleaved in time: read by creation, both tasks would stay in the filter's memory to the end.
    for minutes, (task, actions) in enumerate([(one, SOLVE), (two, SOLVE), (one, near), (two, near)]):
        _episode(store, task, actions, minutes=minutes)
    dedup = NearDuplicateFilter()
    episodes = store.iter_episodes(by_task=True, batch_size=1)
    summary = export(episodes, "sft", tmp_path / "d.jsonl", dedup=dedup, tasks_together=True)
    assert (summary.written, summary.dropped_duplicates) == (2, 2)
    assert [r["instance_id"] for r in _rows(tmp_path / "d.jsonl")] == ["calc-1", "calc-2"]
    assert dedup.keep(str(one.id), "acme/calc", SOLVE), "the first task was forgotten when the second began"
    assert not dedup.keep(str(two.id), "acme/calc", SOLVE), "the task being read is remembered"


# ---- parquet -----------------------------------------------------------------------------------------


def test_parquet_shards_load_with_datasets_and_the_card_tells_what_is_in_them(filled: Store, tmp_path: Path):
    out = tmp_path / "pq"
    summary = export(filled.iter_episodes(), "parquet", out, dedup=NearDuplicateFilter())
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert shards == ["train-00000-of-00001.parquet"]
    assert summary.dropped_duplicates == 0
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert len(ds) == 4
    assert ds.column_names[:3] == ["trajectory_id", "instance_id", "repo"]
    assert {"trajectory", "tools", "model_patch", "exit_status", "resolved"} <= set(ds.column_names)
    assert (
        ds[0]["repo"] == "acme/calc" and ds[0]["model_patch"] == PATCH and ds[0]["exit_status"] == "submitted"
    )
    assert ds[0]["trajectory"][2]["tool_calls"][0]["function"]["arguments"] == json.dumps(
        {"command": "grep -rn 'def less_than' calc/"}
    )
    # The folder is also a Hugging Face dataset repository: its card's configs point at the shards.
    assert len(datasets.load_dataset(str(out), split="train")) == 4
    assert [(m["role"], m["content"], m["tool_calls"]) for m in ds[3]["trajectory"]] == [
        ("system", "You are a careful engineer.", None),
        ("user", "Task id: attrs.comparison.3f2a1\n\nFix it.", None),
    ]
    assert (ds[3]["graded"], ds[3]["resolved"], ds[3]["exit_status"]) == (False, False, "infra_error")
    card = (out / "README.md").read_text()
    assert "4 episodes (2 resolved, 50.0%) of 2 repositories, from 4 episodes read" in card
    assert "| acme/calc | 2 | 1 | 50.0% |" in card
    assert "| comparison_flip | 2 | 1 | 50.0% |" in card
    assert "4 kept, 0 dropped" in card and "| attrs | 2 | 0 |" in card
    assert '"temperature": 0.7' in card


def test_parquet_is_sharded_by_size_and_every_shard_has_the_schema(store: Store, tmp_path: Path):
    image = _image(store, "https://github.com/acme/calc", "acme__calc", "forager/acme__calc:1")
    task = _task(store, image, "calc-1")
    for minute in range(130):
        _episode(store, task, [_bash(f"echo {minute}")], minutes=minute)
    # Rows become Arrow data 64 at a time; with tiny limits each such batch is a row group and a shard.
    export(store.iter_episodes(), "parquet", tmp_path / "pq", shard_bytes=1, row_group_bytes=1)
    shards = sorted((tmp_path / "pq" / "data").iterdir())
    assert [p.name for p in shards] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert [pq.read_metadata(p).num_rows for p in shards] == [64, 64, 2]
    assert all(pq.read_schema(p).equals(SCHEMA, check_metadata=False) for p in shards)
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "pq"), split="train")
    assert [json.loads(row["trajectory"][2]["tool_calls"][0]["function"]["arguments"]) for row in ds] == [
        {"command": f"echo {minute}"} for minute in range(130)
    ]


def test_an_export_of_nothing_is_an_error_and_writes_nothing(filled: Store, tmp_path: Path):
    unresolved = [e for e in filled.iter_episodes() if not e.resolved]
    for name in ("parquet", "sft"):
        with pytest.raises(ExportError, match=r"no episode to export \(2 read, all skipped\)"):
            export(unresolved, name, tmp_path / name, resolved_only=True)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("forager.db")]


# ---- cwm ---------------------------------------------------------------------------------------------


def test_cwm_transitions_follow_the_rl_dump_layout(filled: Store, tmp_path: Path):
    export(filled.iter_episodes(), "cwm", tmp_path / "cwm.jsonl")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "cwm.jsonl"), split="train")
    assert len(ds) == 4
    solved = ds[0]
    transitions = solved["traj"]["transitions"]
    assert transitions[0]["action_str"] == "" and transitions[0]["observation_str"].startswith("Task id:")
    assert transitions[1]["action_str"] == "thought 0\n<tool: bash>\ngrep -rn 'def less_than' calc/\n</tool>"
    assert transitions[2]["action_str"] == (
        "thought 1\n<tool: edit>\ncalc/ops.py\n<<<<<<< SEARCH\na < b\n=======\na <= b\n"
        ">>>>>>> REPLACE\n</tool>"
    )
    # Submitted: the last transition is terminal, without observation, and carries the reward.
    assert transitions[-1]["terminal"] and transitions[-1]["observation_str"] == ""
    assert [t["rewards"] for t in transitions] == [[], [0.0], [0.0], [0.0], [1.0]]
    assert solved["reward"] == 1.0 and solved["truncation_return"] is None
    truncated = ds[1]
    assert truncated["truncation_return"] == 0.0 and not truncated["traj"]["transitions"][-1]["terminal"]
    assert truncated["traj"]["transitions"][2]["action_str"] == "I think <tool: bash without closing"


# ---- swebench ----------------------------------------------------------------------------------------


def test_swebench_predictions_and_task_instances_pass_the_official_harness_loaders(
    filled: Store, tmp_path: Path
):
    from swebench.harness.run_evaluation import get_dataset_from_preds
    from swebench.harness.utils import get_predictions_from_file, make_test_spec

    summary = export(filled.iter_episodes(), "swebench-predictions", tmp_path / "preds.jsonl")
    assert summary.written == 2 and summary.skipped_by_writer == 2  # one prediction per instance
    exported = forager(
        "tasks", "export", str(tmp_path / "new" / "tasks.jsonl"), home=tmp_path, env=_db(filled)
    )
    assert exported.returncode == 0, exported.stderr
    dataset = str(tmp_path / "new" / "tasks.jsonl")

    predictions = get_predictions_from_file(str(tmp_path / "preds.jsonl"), dataset, "test")
    assert predictions[0] == {
        "instance_id": "acme__calc-7",
        "model_name_or_path": "qwen-7b",
        "model_patch": PATCH,
    }
    chosen = get_dataset_from_preds(
        dataset, "test", [], {p["instance_id"]: p for p in predictions}, "forager-test", rewrite_reports=False
    )
    assert [i["instance_id"] for i in chosen] == ["acme__calc-7", "attrs.comparison.3f2a1"]
    spec = make_test_spec(chosen[0])
    assert chosen[0]["repo"] == "acme/calc"
    assert spec.image == "forager/acme__calc:1"
    assert spec.FAIL_TO_PASS == ["tests/test_ops.py::test_equal"]
    assert spec.log_parser == "parse_log_pytest" and spec.eval_type == "pass_and_fail"
    assert "python -m pytest -rA" in spec.eval_script and ">>>>> Start Test Output" in spec.eval_script

    smith = forager("tasks", "export", "--format", "swesmith", str(tmp_path / "smith.jsonl"), home=tmp_path,
                    env=_db(filled))  # fmt: skip
    assert smith.returncode == 0, smith.stderr
    (line,) = _rows(tmp_path / "smith.jsonl")  # mutate-fix tasks only
    assert line["patch"] == PATCH.replace("<=", "<<")  # the bug-introducing diff
    assert (line["repo"], line["image_name"]) == ("attrs.00000000", "forager/attrs:23.1.0")
    assert line["FAIL_TO_PASS"] == ["tests/test_ops.py::test_equal"]


def _db(store: Store) -> dict[str, str]:
    return {"FORAGER_DB": store.url}


# ---- mini-swe-agent ----------------------------------------------------------------------------------


def test_mini_swe_agent_inspector_opens_every_episode(
    filled: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MSWEA_GLOBAL_CONFIG_DIR", str(tmp_path / "mswea"))
    monkeypatch.setenv("MSWEA_SILENT_STARTUP", "1")
    from minisweagent.run.utilities.inspector import TrajectoryInspector

    export(filled.iter_episodes(), "mini-swe-agent", tmp_path / "mini")
    files = sorted((tmp_path / "mini").rglob("*.traj.json"))
    assert len(files) == 4 and {f.parent.name for f in files} == {"acme__calc-7", "attrs.comparison.3f2a1"}
    solved = next(f for f in files if json.loads(f.read_text())["info"]["resolved"])
    data = json.loads(solved.read_text())
    assert data["trajectory_format"] == "mini-swe-agent-1.1"
    assert data["info"]["exit_status"] == "submitted" and data["info"]["submission"] == PATCH

    inspector = TrajectoryInspector([solved])
    # Its pages: the prompts, then one per assistant turn (with its observation), then the exit.
    assert len(inspector.steps) == 5
    assert inspector.steps[1][0]["extra"]["actions"][0]["command"] == "grep -rn 'def less_than' calc/"

    async def render() -> list[str]:
        async with inspector.run_test() as pilot:
            await pilot.press("l")
            return [str(w.render()) for w in inspector.query("Static")]

    import asyncio

    shown = "\n".join(asyncio.run(render()))
    assert "grep -rn 'def less_than' calc/" in shown and "ASSISTANT" in shown


# ---- where it is written -----------------------------------------------------------------------------


def test_every_format_creates_missing_folders_and_refuses_a_non_empty_folder(filled: Store, tmp_path: Path):
    for name in FORMATS:
        target = tmp_path / "a" / name / ("out" if writer(name).directory else "out.jsonl")
        export(filled.iter_episodes(), name, target)
        assert target.exists(), name
        assert not [p for p in target.parent.iterdir() if p.name.startswith(".")], name  # no temporary left
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export(filled.iter_episodes(), "parquet", tmp_path / "full")
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"


def test_cli_export_prints_a_summary_and_an_unwritable_path_is_one_error_line(filled: Store, tmp_path: Path):
    done = forager(
        "export", "sft", str(tmp_path / "x" / "sft.jsonl"), "--resolved-only", "--dedup", home=tmp_path,
        env=_db(filled),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 of 2 episode(s) written" in done.stdout and "dedup acme/calc: 1 kept, 0 dropped" in done.stdout
    assert len(_rows(tmp_path / "x" / "sft.jsonl")) == 2

    (tmp_path / "afile").write_text("")
    failed = forager("export", "cwm", str(tmp_path / "afile" / "out.jsonl"), home=tmp_path, env=_db(filled))
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: cannot write")
    assert "Traceback" not in failed.stderr

    none = forager("export", "sft", str(tmp_path / "y.jsonl"), "--resolved-only", "--unresolved",
                   home=tmp_path, env=_db(filled))  # fmt: skip
    assert none.returncode == 1 and "--resolved-only and --unresolved select nothing" in none.stderr
    nothing = forager("export", "sft", str(tmp_path / "y.jsonl"), "--kind", "mutate_fix", "--unresolved",
                      home=tmp_path, env=_db(filled))  # fmt: skip
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: no episode to export")
    assert not (tmp_path / "y.jsonl").exists()


def _limit_file_size() -> None:
    """Files may not grow beyond 2 KiB: writing more fails as a full disk does (EFBIG, not a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


def test_a_full_disk_is_one_error_line_and_leaves_nothing_under_the_name(filled: Store, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sft.jsonl").write_text("the previous export\n")
    done = subprocess.run(
        [sys.executable, "-m", "forager", "--home", str(tmp_path), "--db", filled.url,
         "export", "sft", str(out / "sft.jsonl")],
        capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot write") and "free some space" in done.stderr
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["sft.jsonl"]  # the temporary is gone
    assert (out / "sft.jsonl").read_text() == "the previous export\n"  # and the old file untouched


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.mark.parametrize(
    ("prediction", "resolved"),
    [("fix", True), ("nothing", False), ("edit the test", False)],
)
def test_swebench_grades_the_eval_script_output_as_forager_does(
    tmp_path: Path, prediction: str, resolved: bool
):
    """The eval script run on a real repository (as the harness runs it, after applying the prediction);
    SWE-bench's own log parser and report decide."""
    from swebench.harness.grading import get_eval_report
    from swebench.harness.utils import make_test_spec

    from envs.swebench import PYTEST_LOG_PARSER, eval_script

    repo = tmp_path / "repo"
    (repo / "calc").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "calc" / "__init__.py").write_text("")
    (repo / "calc" / "ops.py").write_text("def less_or_equal(a, b):\n    return a < b\n")
    (repo / "tests" / "test_ops.py").write_text(
        "from calc.ops import less_or_equal\n\n"
        "def test_equal():\n    assert less_or_equal(2, 2)\n\n"
        "def test_less():\n    assert less_or_equal(1, 2)\n"
    )
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    if prediction == "fix":
        (repo / "calc" / "ops.py").write_text("def less_or_equal(a, b):\n    return a <= b\n")
    elif prediction == "edit the test":
        (repo / "tests" / "test_ops.py").write_text(
            "def test_equal():\n    pass\n\ndef test_less():\n    pass\n"
        )
    f2p, p2p = ["tests/test_ops.py::test_equal"], ["tests/test_ops.py::test_less"]
    script = eval_script(
        workdir=str(repo),
        pytest_words=[sys.executable, "-m", "pytest"],
        test_ids=[*f2p, *p2p],
        test_files=["tests/test_ops.py"],
    )
    instance = {
        "instance_id": "acme__calc-1", "image": "forager/acme__calc:1", "repo": "acme/calc", "version": "",
        "FAIL_TO_PASS": json.dumps(f2p), "PASS_TO_PASS": json.dumps(p2p), "log_parser": PYTEST_LOG_PARSER,
        "eval_type": "pass_and_fail", "eval_script": script,
    }  # fmt: skip
    spec = make_test_spec(instance)
    ran = subprocess.run(["bash", "-c", spec.eval_script], capture_output=True, text=True, timeout=120)
    log = tmp_path / "test_output.txt"
    log.write_text(ran.stdout + ran.stderr)
    prediction_record = {"instance_id": "acme__calc-1", "model_name_or_path": "m", "model_patch": "diff"}
    report = get_eval_report(spec, prediction_record, str(log), include_tests_status=True)["acme__calc-1"]
    assert report["patch_successfully_applied"], log.read_text()
    assert report["resolved"] is resolved, report
    assert report["tests_status"]["PASS_TO_PASS"]["success"] == p2p


# ---- the conversation of a shortened context, request by request -------------------------------------


@pytest.fixture(scope="module")
def calc_image(docker_client, tmp_path_factory):
    """A store holding a built fixture image (a small Python project) and one task of it."""
    from images.builder import BuildOptions, ImageBuilder
    from images.proxy import NetworkSettings
    from images.sources import parse_source
    from tests.repos import make_repo, python_project

    root = tmp_path_factory.mktemp("shortened")
    store = Store(f"sqlite:///{root / 'forager.db'}")
    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=600)
    make_repo(root / "calc", python_project())
    built = ImageBuilder(docker_client, store, root / "home", options).build(parse_source(str(root / "calc")))
    assert built.status == ImageStatus.READY, built.reason
    try:
        yield store, store.get_image(built.tag)
    finally:
        store.close()
        docker_client.images.remove(built.tag, force=True)


@pytest.mark.docker
def test_per_request_rows_are_exactly_what_each_request_sent_when_the_context_was_shortened(
    calc_image, docker_client, tmp_path: Path
):
    """A real episode against a fake server with a small window: the agent shortens old observations at
    requests 3 and 4; `--per-request` rows, read back with `datasets`, are the server's requests."""
    import asyncio

    from aiohttp import web

    from envs.docker_backend import DockerBackend
    from forager.agent import AgentConfig, run_episode
    from forager.context import message_chars
    from forager.model import ModelClient, ModelConfig
    from storage import EpisodeFilter
    from tests.fake_openai import FakeOpenAI, completion_body, tool_call

    store, image = calc_image
    task = _task(store, image, "calc-window", fail_to_pass=["tests/test_calc.py::test_add"], pass_to_pass=[])

    def answer(k: int) -> dict:
        call = tool_call("bash", {"command": f"seq 1 4000 # {k}"}, id=f"call_{k}")
        return {"role": "assistant", "content": f"step {k}", "tool_calls": [call]}

    def turn(k: int):
        async def respond(request: dict) -> web.StreamResponse:
            tokens = message_chars(request["messages"]) // 4  # the server counts 4 characters a token
            calls = answer(k)["tool_calls"]
            body = completion_body(request, f"step {k}", tool_calls=calls, usage=(tokens, 9))
            return web.json_response(body)

        return respond

    config = AgentConfig(max_turns=5, max_completion_tokens=100, context_window=10_000)
    with FakeOpenAI([turn(k) for k in range(5)]) as server:

        async def go():
            async with ModelClient(ModelConfig(base_url=server.base_url, model="fake")) as client:
                return await run_episode(task, image, client, DockerBackend(docker_client), config,
                                         model_name="fake")  # fmt: skip

        episode, steps = asyncio.run(go())
        sent = [request["messages"] for request in server.requests]
    store.save_episode(episode, steps)
    assert episode.exit_reason == "max_turns" and len(steps) == 5
    assert sorted({s["at"] for s in episode.config["context"]["shortened"]}) == [3, 4]

    selection = EpisodeFilter(task_id=task.id)
    summary = export(store.iter_episodes(selection), "sft", tmp_path / "req.jsonl", per_request=True)
    assert (summary.written, summary.rows) == (1, 3)
    rows = datasets.load_dataset("json", data_files=str(tmp_path / "req.jsonl"), split="train")
    assert [(r["first_request"], r["last_request"]) for r in rows] == [(0, 2), (3, 3), (4, 4)]
    assert all(r["context_shortened"] for r in rows)

    def shape(messages: list[dict]) -> list[tuple]:
        def calls(m: dict) -> list[tuple]:
            made = m.get("tool_calls") or []
            return [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in made]

        return [(m["role"], m.get("content"), m.get("tool_call_id"), calls(m)) for m in messages]

    for index, row in enumerate(rows):
        # A row ends with the answer to its last request; the last row, the episode's end, also with the
        # observation that answer got (as the default row does).
        answered = max(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")
        request, reply = row["messages"][:answered], row["messages"][answered]
        assert [m["role"] for m in row["messages"][answered + 1 :]] == (["tool"] if index == 2 else [])
        last = row["last_request"]
        assert shape(request) == shape(sent[last]), last  # exactly what that request sent
        assert shape([reply]) == shape([answer(last)])
        # Every earlier request of the row is a prefix of it: each turn followed what its request sent.
        for k in range(row["first_request"], last):
            assert shape(sent[k]) == shape(request[: len(sent[k])])
    # parquet holds the same rows, and its card says how they were cut.
    export(store.iter_episodes(selection), "parquet", tmp_path / "pq", per_request=True)
    table = datasets.load_dataset("parquet", data_dir=str(tmp_path / "pq"), split="train")
    assert [shape(r["trajectory"]) for r in table] == [shape(r["messages"]) for r in rows]
    assert "3 rows: an episode whose context was shortened" in (tmp_path / "pq" / "README.md").read_text()
    with pytest.raises(ExportError, match="--per-request applies to the sft and parquet formats"):
        export(store.iter_episodes(selection), "cwm", tmp_path / "cwm.jsonl", per_request=True)
    # The default view: one row, the conversation at the end, which no request sent as such.
    export(store.iter_episodes(selection), "sft", tmp_path / "final.jsonl")
    (final,) = _rows(tmp_path / "final.jsonl")
    assert final["context_shortened"] and (final["first_request"], final["last_request"]) == (0, 4)
    assert "elided to fit the context window" in final["messages"][3]["content"]
    assert "elided to fit the context window" not in shape(sent[2])[3][1]


# ---- a full disk and a read-only file system, for every format ----------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs of its own (needs root, as the tests run here and in CI's container); unmounted
    at the end. A test fills it up itself."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path) -> None:
    """Write a file until the disk has no byte left."""
    with (disk / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 4096)


@pytest.mark.parametrize("name", [*FORMATS, "tasks-export"])
def test_a_full_disk_is_one_error_line_and_the_previous_file_stays_for_every_format(
    filled: Store, small_disk: Path, tmp_path: Path, name: str
):
    directory = name in FORMATS and writer(name).directory
    target = small_disk / ("out" if directory else "out.jsonl")
    if not directory:
        target.write_text("the previous export\n")
    _fill(small_disk)
    args = ["tasks", "export", str(target)] if name == "tasks-export" else ["export", name, str(target)]
    done = forager(*args, home=tmp_path, env=_db(filled))
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith(f"error: cannot write {target}: No space left on device"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    left = sorted(p.name for p in small_disk.iterdir())
    assert left == (["filler"] if directory else ["filler", "out.jsonl"])  # no temporary, no half export
    if not directory:
        assert target.read_text() == "the previous export\n"


def test_a_read_only_file_system_is_one_error_line(filled: Store, small_disk: Path, tmp_path: Path):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for args in (["export", "parquet", str(small_disk / "new" / "pq")],
                 ["tasks", "export", str(small_disk / "tasks.jsonl")]):  # fmt: skip
        done = forager(*args, home=tmp_path, env=_db(filled))
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("error: cannot write") and "Read-only file system" in done.stderr
    assert not list(small_disk.iterdir())
