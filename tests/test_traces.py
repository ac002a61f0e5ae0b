"""Execution traces end to end: a generated repository built into an image, traced, stored, exported."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from envs import trace_format
from envs.docker_backend import DockerBackend
from envs.runtime import Observation
from envs.tracer import CHILD_GRACE
from envs.traces import Entry, TraceOptions, make_traces, trace_run
from images.sources import parse_source
from storage import Image, ImageStatus
from storage.models import TraceKind
from storage.traces import TraceFilter
from tests.cli import forager
from tests.repos import PYPROJECT, make_repo
from tests.test_tracer import FACT, FAIL, GEN_SUM, SAFE_DIV, TOTAL

pytestmark = pytest.mark.docker

MODULE = """\
import time


def total(items):
    acc = 0
    for x in items:
        acc += square(x)
    return acc


def square(v):
    return v * v


def fact(n):
    if n <= 1:
        return 1
    return n * fact(n - 1)


def safe_div(a, b):
    try:
        q = a / b
    except ZeroDivisionError:
        q = None
    return q


def fail(x):
    y = x + 1
    raise ValueError(y)


def gen_sum(n):
    return sum(evens(n))


def evens(n):
    for i in range(n):
        if i % 2 == 0:
            yield i


class Hostile:
    def __repr__(self):
        raise RuntimeError("no repr for you")


def hostile(h):
    return 1


def huge(n):
    numbers = list(range(n))
    return len(numbers)


def stamp():
    now = time.time()
    return now > 0
"""

TESTS = """\
import pytest

from tracefx import Hostile, fact, fail, gen_sum, hostile, huge, safe_div, stamp, total


def test_total():
    assert total([1, 2]) == 5


def test_fact():
    assert fact(3) == 6


def test_safe_div():
    assert safe_div(1, 0) is None


def test_fail():
    with pytest.raises(ValueError):
        fail(1)


def test_gen_sum():
    assert gen_sum(3) == 2


def test_hostile():
    assert hostile(Hostile()) == 1


def test_huge():
    assert huge(100_000) == 100_000


def test_stamp():
    assert stamp()
"""

PATH = "src/tracefx/__init__.py"
EXPECTED = {"total": TOTAL, "fact": FACT, "safe_div": SAFE_DIV, "fail": FAIL, "gen_sum": GEN_SUM}


def test_a_fixture_repository_is_traced_stored_resumed_and_exported(builder, store, docker_client, tmp_path):
    files = {
        "pyproject.toml": PYPROJECT.format(name="tracefx", dependencies=""),
        PATH: MODULE,
        "tests/test_fx.py": TESTS,
    }
    make_repo(tmp_path / "tracefx", files)
    built = builder.build(parse_source(str(tmp_path / "tracefx")))
    assert built.status == ImageStatus.READY, built.reason
    image = store.get_image(built.tag)

    backend = DockerBackend(docker_client)
    report = make_traces(backend, store, image, TraceOptions(workers=2), cache_dir=tmp_path / "cache")

    # 9 functions (the generator `evens` is no entry point) and 8 tests; `stamp` reads the clock.
    assert report.entries == 17 and report.resumed == 0
    assert report.kept == 15 and dict(report.dropped) == {"nondeterministic": 2}
    traces = {(t.kind, t.qualname): t for t in store.list_traces(TraceFilter(status=None))}
    assert traces[TraceKind.FUNCTION, "stamp"].drop_reason == "nondeterministic"
    assert traces[TraceKind.TEST, "test_stamp"].deterministic is False

    for name, expected in EXPECTED.items():
        trace = store.get_trace(traces[TraceKind.FUNCTION, name].id)
        assert trace.deterministic and trace.test == f"tests/test_fx.py::test_{name}"
        text = trace_format.cwm_text(trace.data, trace.context)
        assert text.startswith(f"<|trace_context_start|># {PATH}\n")
        marked = [line for line in trace.context.splitlines() if line.endswith(trace_format.START_MARKER)]
        assert len(marked) == 1 and marked[0].startswith(f"def {name}(")
        assert text.endswith(trace_format.FRAME_SEP + expected), name

    hostile = store.get_trace(traces[TraceKind.FUNCTION, "hostile"].id)
    assert hostile.data["frames"][0][3] == {"h": "<unrepresentable Hostile: RuntimeError>"}
    assert hostile.unrepresentable_values == 2
    huge = store.get_trace(traces[TraceKind.FUNCTION, "huge"].id)
    numbers = next(f["locals"]["numbers"] for f in trace_format.resolved_frames(huge.data) if f["locals"]
                   and "numbers" in f["locals"])  # fmt: skip
    assert numbers == "[" + ", ".join(map(str, range(32))) + ", ...]"
    test_trace = store.get_trace(traces[TraceKind.TEST, "test_total"].id)
    assert test_trace.line == 6 and test_trace.path == "tests/test_fx.py"
    events = [(f[0], test_trace.data["files"][f[1]]) for f in test_trace.data["frames"]]
    assert events[0] == ("call", "tests/test_fx.py") and ("call", PATH) in events

    # Every frame names a line of the repository as it is.
    sources = {
        path: (tmp_path / "tracefx" / path).read_text().splitlines() for path in (PATH, "tests/test_fx.py")
    }
    for trace in store.iter_traces():
        for frame in trace_format.resolved_frames(trace.data):
            assert frame["source"] == sources[frame["path"]][frame["line"] - 1]

    # Resumed: nothing is traced twice (coverage measured again: the CLI keeps it under its own home).
    again = forager("traces", "make", "--json", image.tag, home=tmp_path)
    assert again.returncode == 0, again.stderr
    (summary,) = json.loads(again.stdout)
    assert (summary["entries"], summary["resumed"], summary["kept"]) == (17, 17, 0)

    listed = json.loads(forager("traces", "list", "--json", "--status", "all", home=tmp_path).stdout)
    assert listed["counts"] == {"ok": 15, "dropped": {"nondeterministic": 2}}
    shown = forager("traces", "show", str(traces[TraceKind.FUNCTION, "fact"].id), home=tmp_path)
    assert shown.returncode == 0 and "return n * fact(n - 1)" in shown.stdout and "-> 6" in shown.stdout
    # A non-deterministic trace is kept (never exported) with where its recordings went apart.
    dropped = forager("traces", "show", str(traces[TraceKind.FUNCTION, "stamp"].id), home=tmp_path)
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped (nondeterministic): the recordings first differ at frame 2: first line at line" in (
        dropped.stdout
    )
    cwm = forager("traces", "show", "--cwm", str(traces[TraceKind.FUNCTION, "stamp"].id), home=tmp_path)
    assert cwm.returncode == 1 and "error: trace" in cwm.stderr and "no training text" in cwm.stderr

    cwm_out, jsonl_out = tmp_path / "out" / "traces.cwm.jsonl", tmp_path / "out" / "traces.jsonl"
    exported = forager("traces", "export", str(cwm_out), "--kind", "function", "--json", home=tmp_path)
    assert json.loads(exported.stdout)["written"] == 8
    rows = datasets.load_dataset("json", data_files=str(cwm_out), split="train")
    by_name = {row["entry"]["qualname"]: row for row in rows}
    assert by_name["fact"]["text"].endswith(trace_format.FRAME_SEP + FACT)
    assert by_name["fact"]["repository"] == image.repository.name

    structured = forager(
        "traces", "export", str(jsonl_out), "--format", "jsonl", "--min-frames", "10", home=tmp_path
    )
    assert structured.returncode == 0, structured.stderr
    rows = datasets.load_dataset("json", data_files=str(jsonl_out), split="train")
    assert rows.num_rows and all(row["n_frames"] >= 10 for row in rows)
    total = next(row for row in rows if row["entry"]["qualname"] == "total")
    assert total["frames"][3]["locals"] == {"items": "[1, 2]", "acc": "0", "x": "1"}

    deduplicated = forager(
        "traces", "export", str(tmp_path / "dedup.jsonl"), "--dedup", "--json", home=tmp_path
    )
    assert json.loads(deduplicated.stdout)["near_duplicates"] == 0  # one trace per entry function here


def test_an_image_without_passing_tests_is_skipped_with_a_reason(store, tmp_path: Path) -> None:
    result = forager("traces", "make", "no-such-image", home=tmp_path)
    assert result.returncode == 1 and "error: no image 'no-such-image'" in result.stderr


class _CutShortRun:
    """A runtime whose tracing run hits its time limit after recording the first entry point only."""

    workdir = "/repo"

    def write_file(self, path: str, data: bytes) -> None:
        pass

    def run(self, command: str, timeout: float) -> Observation:
        assert timeout >= 120 + 2 * 2 * (TraceOptions().max_seconds + CHILD_GRACE), "room for both children"
        return Observation("", None, timeout, timed_out=True)

    def read_file(self, path: str) -> bytes:
        return json.dumps({"id": "0", "status": "dropped", "reason": "timeout"}).encode() + b"\n"


def test_entry_points_a_run_cut_short_never_reached_stay_pending() -> None:
    entries = [Entry(TraceKind.TEST, f"tests/test_a.py::test_{n}", "", "") for n in range(2)]
    rows, _ = trace_run(_CutShortRun(), Image(id=1, test_command="pytest"), entries, TraceOptions())
    # The reached one is stored (dropped, its own timeout); the other is not stored as "crashed".
    assert [(row.test, row.drop_reason) for row in rows] == [("tests/test_a.py::test_0", "timeout")]
