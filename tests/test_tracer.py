"""The tracer on fixture code with the host's Python, against traces written by hand in CWM's format."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType

import pytest

from envs import trace_format, tracer
from envs.tracer import Renderer, trace_call

FIXTURE = """\
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


class Loud:
    def __repr__(self):
        return "L" * 10_000


class Plain:
    pass


def hostile(h):
    loud = Loud()
    plain = Plain()
    return 1


def huge(n):
    numbers = list(range(n))
    nested = [[[[[1]]]]]
    return len(numbers)


def spin():
    x = 0
    while x >= 0:
        x += 1


def count_to(n):
    i = 0
    while i < n:
        i += 1
    return i


def importer():
    import side_effect_module

    return side_effect_module.VALUE + 1


def wrap_all(n):
    out = []
    for i in range(n):
        out.append(wrap(i))
    return out


def wrap(v):
    return square(v)
"""


def cwm(*frames: str) -> str:
    """Frames written one per line, as they read; the format itself has no newlines between them."""
    return "".join(frame + trace_format.FRAME_SEP for frame in frames) + trace_format.END_OF_TEXT


#: Hand-written traces of the fixture functions (also the ones recorded in an image, tests/test_traces.py).
TOTAL = cwm(
    '<|call_sep|>{"items": "[1, 2]"}<|action_sep|>def total(items):',
    '<|line_sep|>{"items": ".."}<|action_sep|>    acc = 0',
    '<|line_sep|>{"items": "..", "acc": "0"}<|action_sep|>    for x in items:',
    '<|line_sep|>{"items": "..", "acc": "..", "x": "1"}<|action_sep|>        acc += square(x)',
    '<|call_sep|>{"v": "1"}<|action_sep|>def square(v):',
    '<|line_sep|>{"v": ".."}<|action_sep|>    return v * v',
    '<|return_sep|><|action_sep|>    return v * v<|arg_sep|>"1"',
    '<|line_sep|>{"items": "[1, 2]", "acc": "1", "x": "1"}<|action_sep|>    for x in items:',
    '<|line_sep|>{"items": "..", "acc": "..", "x": "2"}<|action_sep|>        acc += square(x)',
    '<|call_sep|>{"v": "2"}<|action_sep|>def square(v):',
    '<|line_sep|>{"v": ".."}<|action_sep|>    return v * v',
    '<|return_sep|><|action_sep|>    return v * v<|arg_sep|>"4"',
    '<|line_sep|>{"items": "[1, 2]", "acc": "5", "x": "2"}<|action_sep|>    for x in items:',
    '<|line_sep|>{"items": "..", "acc": "..", "x": ".."}<|action_sep|>    return acc',
    '<|return_sep|><|action_sep|>    return acc<|arg_sep|>"5"',
)

FACT = cwm(
    '<|call_sep|>{"n": "3"}<|action_sep|>def fact(n):',
    '<|line_sep|>{"n": ".."}<|action_sep|>    if n <= 1:',
    '<|line_sep|>{"n": ".."}<|action_sep|>    return n * fact(n - 1)',
    '<|call_sep|>{"n": "2"}<|action_sep|>def fact(n):',
    '<|line_sep|>{"n": ".."}<|action_sep|>    if n <= 1:',
    '<|line_sep|>{"n": ".."}<|action_sep|>    return n * fact(n - 1)',
    '<|call_sep|>{"n": "1"}<|action_sep|>def fact(n):',
    '<|line_sep|>{"n": ".."}<|action_sep|>    if n <= 1:',
    '<|line_sep|>{"n": ".."}<|action_sep|>        return 1',
    '<|return_sep|><|action_sep|>        return 1<|arg_sep|>"1"',
    '<|return_sep|><|action_sep|>    return n * fact(n - 1)<|arg_sep|>"2"',
    '<|return_sep|><|action_sep|>    return n * fact(n - 1)<|arg_sep|>"6"',
)

SAFE_DIV = cwm(
    '<|call_sep|>{"a": "1", "b": "0"}<|action_sep|>def safe_div(a, b):',
    '<|line_sep|>{"a": "..", "b": ".."}<|action_sep|>    try:',
    '<|line_sep|>{"a": "..", "b": ".."}<|action_sep|>        q = a / b',
    "<|exception_sep|><|action_sep|>        q = a / b<|arg_sep|>\"ZeroDivisionError('division by zero')\"",
    '<|line_sep|>{"a": "..", "b": ".."}<|action_sep|>    except ZeroDivisionError:',
    '<|line_sep|>{"a": "..", "b": ".."}<|action_sep|>        q = None',
    '<|line_sep|>{"a": "..", "b": "..", "q": "None"}<|action_sep|>    return q',
    '<|return_sep|><|action_sep|>    return q<|arg_sep|>"None"',
)

FAIL = cwm(
    '<|call_sep|>{"x": "1"}<|action_sep|>def fail(x):',
    '<|line_sep|>{"x": ".."}<|action_sep|>    y = x + 1',
    '<|line_sep|>{"x": "..", "y": "2"}<|action_sep|>    raise ValueError(y)',
    '<|exception_sep|><|action_sep|>    raise ValueError(y)<|arg_sep|>"ValueError(2)"',
    '<|return_sep|><|action_sep|>    raise ValueError(y)<|arg_sep|>"None"',
)

GEN_SUM = cwm(
    '<|call_sep|>{"n": "3"}<|action_sep|>def gen_sum(n):',
    '<|line_sep|>{"n": ".."}<|action_sep|>    return sum(evens(n))',
    '<|call_sep|>{"n": "3"}<|action_sep|>def evens(n):',
    '<|line_sep|>{"n": ".."}<|action_sep|>    for i in range(n):',
    '<|line_sep|>{"n": "..", "i": "0"}<|action_sep|>        if i % 2 == 0:',
    '<|line_sep|>{"n": "..", "i": ".."}<|action_sep|>            yield i',
    '<|return_sep|><|action_sep|>            yield i<|arg_sep|>"0"',
    '<|call_sep|>{"n": "3", "i": "0"}<|action_sep|>            yield i',
    '<|line_sep|>{"n": "..", "i": ".."}<|action_sep|>    for i in range(n):',
    '<|line_sep|>{"n": "..", "i": "1"}<|action_sep|>        if i % 2 == 0:',
    '<|line_sep|>{"n": "..", "i": ".."}<|action_sep|>    for i in range(n):',
    '<|line_sep|>{"n": "..", "i": "2"}<|action_sep|>        if i % 2 == 0:',
    '<|line_sep|>{"n": "..", "i": ".."}<|action_sep|>            yield i',
    '<|return_sep|><|action_sep|>            yield i<|arg_sep|>"2"',
    '<|call_sep|>{"n": "3", "i": "2"}<|action_sep|>            yield i',
    '<|line_sep|>{"n": "..", "i": ".."}<|action_sep|>    for i in range(n):',
    '<|return_sep|><|action_sep|>    for i in range(n):<|arg_sep|>"None"',
    '<|return_sep|><|action_sep|>    return sum(evens(n))<|arg_sep|>"2"',
)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModuleType]:
    root = tmp_path_factory.mktemp("project")
    (root / "fx.py").write_text(FIXTURE)
    spec = importlib.util.spec_from_file_location("fx_traced", root / "fx.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return root, module


def recorded(fixture: tuple[Path, ModuleType], name: str, *args: object, **options: object) -> dict:
    root, module = fixture
    result = trace_call(str(root), getattr(module, name), *args, **options)
    assert result["status"] == "ok", result
    return result


def frames_of(result: dict) -> str:
    text = trace_format.cwm_text(result)
    return text[text.index(trace_format.FRAME_SEP) + len(trace_format.FRAME_SEP) :]


def test_a_loop_calling_a_function(fixture: tuple[Path, ModuleType]) -> None:
    result = recorded(fixture, "total", [1, 2])
    assert trace_format.cwm_text(result).startswith(
        "<|trace_context_start|># fx.py\n"
        "def total(items):  # << START_OF_TRACE\n"
        "    acc = 0\n"
        "    for x in items:\n"
        "        acc += square(x)\n"
        "    return acc\n"
        "\n"
        "def square(v):\n"
        "    return v * v\n"
        "<|frame_sep|>"
    )
    assert frames_of(result) == TOTAL


def test_recursion_ends_when_the_entry_call_returns(fixture: tuple[Path, ModuleType]) -> None:
    result = recorded(fixture, "fact", 3)
    assert frames_of(result) == FACT


def test_an_exception_caught(fixture: tuple[Path, ModuleType]) -> None:
    assert frames_of(recorded(fixture, "safe_div", 1, 0)) == SAFE_DIV


def test_an_exception_escaping_the_entry(fixture: tuple[Path, ModuleType]) -> None:
    assert frames_of(recorded(fixture, "fail", 1)) == FAIL


def test_a_generator_is_entered_at_every_resumption(fixture: tuple[Path, ModuleType]) -> None:
    assert frames_of(recorded(fixture, "gen_sum", 3)) == GEN_SUM


def test_hostile_reprs_are_contained(fixture: tuple[Path, ModuleType]) -> None:
    _, module = fixture
    result = recorded(fixture, "hostile", module.Hostile(), renderer=Renderer(max_chars=8))
    loud = "L" * 8 + "..."
    assert frames_of(result) == cwm(
        '<|call_sep|>{"h": "<unrepresentable Hostile: RuntimeError>"}<|action_sep|>def hostile(h):',
        '<|line_sep|>{"h": ".."}<|action_sep|>    loud = Loud()',
        f'<|line_sep|>{{"h": "..", "loud": "{loud}"}}<|action_sep|>    plain = Plain()',
        '<|line_sep|>{"h": "..", "loud": "..", "plain": "<fx_trac..."}<|action_sep|>    return 1',
        '<|return_sep|><|action_sep|>    return 1<|arg_sep|>"1"',
    )
    assert result["unrepresentable"] == 4  # once per frame that shows h
    assert result["truncated"] == 3


def test_huge_containers_are_rendered_in_part(fixture: tuple[Path, ModuleType]) -> None:
    result = recorded(fixture, "huge", 1_000_000, renderer=Renderer(max_items=3, max_depth=3))
    assert frames_of(result) == cwm(
        '<|call_sep|>{"n": "1000000"}<|action_sep|>def huge(n):',
        '<|line_sep|>{"n": ".."}<|action_sep|>    numbers = list(range(n))',
        '<|line_sep|>{"n": "..", "numbers": "[0, 1, 2, ...]"}<|action_sep|>    nested = [[[[[1]]]]]',
        '<|line_sep|>{"n": "..", "numbers": "..", "nested": "[[[[...]]]]"}'
        "<|action_sep|>    return len(numbers)",
        '<|return_sep|><|action_sep|>    return len(numbers)<|arg_sep|>"1000000"',
    )


def test_a_module_imported_during_the_trace_is_not_traced(
    fixture: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = fixture
    (root / "side_effect_module.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(root))
    result = recorded(fixture, "importer")
    assert {result["files"][frame[1]] for frame in result["frames"]} == {"fx.py"}
    assert result["frames"][-1][4] == "42"


def test_the_same_call_traced_twice_is_identical(fixture: tuple[Path, ModuleType]) -> None:
    assert recorded(fixture, "total", [3, 4])["frames"] == recorded(fixture, "total", [3, 4])["frames"]


def test_budgets_and_generators_drop_the_trace(fixture: tuple[Path, ModuleType]) -> None:
    root, module = fixture
    over = trace_call(str(root), module.count_to, 1000, max_frames=50)
    assert (over["status"], over["reason"]) == ("dropped", "frames")
    assert "frames" not in over
    stuck = trace_call(str(root), module.spin, max_seconds=0.3, max_frames=10**9)
    assert (stuck["status"], stuck["reason"]) == ("dropped", "wall_clock")
    generator = trace_call(str(root), module.evens, 3)
    assert (generator["status"], generator["reason"]) == ("dropped", "generator")
    # The tracer is gone afterwards: nothing keeps tracing the host.
    assert sys.gettrace() is None or "coverage" in type(sys.gettrace()).__module__


def test_calls_past_the_limit_are_stepped_over_with_what_they_call(
    fixture: tuple[Path, ModuleType],
) -> None:
    result = recorded(fixture, "wrap_all", 2, max_calls=1)
    assert frames_of(result) == cwm(
        '<|call_sep|>{"n": "2"}<|action_sep|>def wrap_all(n):',
        '<|line_sep|>{"n": ".."}<|action_sep|>    out = []',
        '<|line_sep|>{"n": "..", "out": "[]"}<|action_sep|>    for i in range(n):',
        '<|line_sep|>{"n": "..", "out": "..", "i": "0"}<|action_sep|>        out.append(wrap(i))',
        '<|call_sep|>{"v": "0"}<|action_sep|>def wrap(v):',
        '<|line_sep|>{"v": ".."}<|action_sep|>    return square(v)',
        '<|call_sep|>{"v": "0"}<|action_sep|>def square(v):',
        '<|line_sep|>{"v": ".."}<|action_sep|>    return v * v',
        '<|return_sep|><|action_sep|>    return v * v<|arg_sep|>"0"',
        '<|return_sep|><|action_sep|>    return square(v)<|arg_sep|>"0"',
        '<|line_sep|>{"n": "2", "out": "[0]", "i": "0"}<|action_sep|>    for i in range(n):',
        '<|line_sep|>{"n": "..", "out": "..", "i": "1"}<|action_sep|>        out.append(wrap(i))',
        # wrap(1), and square(1) beneath it, stepped over: the loop goes on with their result.
        '<|line_sep|>{"n": "..", "out": "[0, 1]", "i": ".."}<|action_sep|>    for i in range(n):',
        '<|line_sep|>{"n": "..", "out": "..", "i": ".."}<|action_sep|>    return out',
        '<|return_sep|><|action_sep|>    return out<|arg_sep|>"[0, 1]"',
    )
    assert result["stepped_over"] == 1
    # Without the limit, every call is stepped into.
    assert recorded(fixture, "wrap_all", 2)["stepped_over"] == 0
    assert len(recorded(fixture, "wrap_all", 2)["frames"]) == len(result["frames"]) + 6


def test_a_recursion_is_followed_past_the_call_limit(fixture: tuple[Path, ModuleType]) -> None:
    result = recorded(fixture, "fact", 3, max_calls=1)
    assert frames_of(result) == FACT
    assert result["stepped_over"] == 0


def test_a_loop_past_the_frame_budget_fits_once_its_helper_is_stepped_over(
    fixture: tuple[Path, ModuleType],
) -> None:
    root, module = fixture
    assert trace_call(str(root), module.total, list(range(300)), max_frames=1000)["reason"] == "frames"
    fitted = recorded(fixture, "total", list(range(300)), max_frames=1000, max_calls=5)
    assert fitted["stepped_over"] == 295
    assert fitted["frames"][-1][4] == str(sum(x * x for x in range(300)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1,), "(1,)"),
        ({"b": 1, "a": [2, (3, 4)]}, "{'b': 1, 'a': [2, (3, 4)]}"),
        (frozenset(), "frozenset()"),
        ({7}, "{7}"),
        ("x" * 10, "'xxxx..."),
        (b"yy", "b'yy'"),
    ],
)
def test_values_render_as_their_repr_within_bounds(value: object, expected: str) -> None:
    assert Renderer(max_chars=5 if isinstance(value, str) else 256).render(value) == expected


class Job:
    def __repr__(self) -> str:
        return "<Job(started 3)>"


def test_addresses_in_reprs_are_normalized() -> None:
    from unittest import mock

    assert Renderer().render(object()) == "<object object at 0x..>"
    mocked = [mock.NonCallableMagicMock(spec=int)]
    assert Renderer().render(mocked) == "[<NonCallableMagicMock spec='int' id='..'>]"
    # A thread's ident is its pthread's address.
    assert Renderer().render(threading.main_thread()) == "<_MainThread(MainThread, started ..)>"
    release = threading.Event()
    worker = threading.Thread(target=release.wait, args=(5,), name="w (run)", daemon=True)
    worker.start()
    assert Renderer().render([worker]) == "[<Thread(w (run), started daemon ..)>]"
    release.set()
    worker.join()
    # Only a thread's repr: another object's number after "started" is its own.
    assert Renderer().render(Job()) == "<Job(started 3)>"
    done = threading.Thread(target=int, name="d")
    done.start()
    done.join()
    assert Renderer().render(done) == "<Thread(d, stopped ..)>"


def test_a_container_holding_itself_renders_as_python_does() -> None:
    cycle: list[object] = [1]
    cycle.append(cycle)
    assert Renderer().render(cycle) == repr(cycle) == "[1, [...]]"


def test_unchanged_values_resolve_back_to_full_locals(fixture: tuple[Path, ModuleType]) -> None:
    frames = list(trace_format.resolved_frames(recorded(fixture, "total", [1, 2])))
    assert frames[1]["locals"] == {"items": "[1, 2]"}
    assert frames[3] == {
        "event": "line",
        "path": "fx.py",
        "line": 4,
        "source": "        acc += square(x)",
        "locals": {"items": "[1, 2]", "acc": "0", "x": "1"},
        "value": None,
    }
    assert "return    fx.py:9" in trace_format.listing(recorded(fixture, "total", [1]))


PROJECT_TEST = """\
import os
import random

import pytest

from fx import fact, total


def test_total():
    assert total([1, 2]) == 5
    assert total([3]) == 9


def test_fact():
    assert fact(2) == 2


def test_other():
    assert True


STATE = []


def test_state():
    n = len(STATE)
    STATE.append(n)


def test_identity():
    marker = hash(object())
    assert marker


def test_random():
    drawn = random.random()
    assert drawn < 1


@pytest.fixture
def resource():
    yield "open"
    with open(os.environ["FX_TEARDOWNS"], "a") as marks:  # what a server fixture's shutdown would be
        marks.write("torn down\\n")


def test_with_resource(resource):
    assert resource == "open"
"""


def test_the_pytest_plugin_records_the_first_call_of_each_entry(
    fixture: tuple[Path, ModuleType], tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    (root / "fx.py").write_text(FIXTURE)
    (root / "tests" / "test_fx.py").write_text(PROJECT_TEST)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    shutil.copy(tracer.__file__, plugin / "forager_tracer.py")
    output = tmp_path / "out.jsonl"
    entries = [
        {
            "id": "0",
            "kind": "function",
            "test": "tests/test_fx.py::test_total",
            "path": "fx.py",
            "name": "total",
            "firstlineno": 1,
        },
        {
            "id": "1",
            "kind": "test",
            "test": "tests/test_fx.py::test_fact",
            "path": "",
            "name": "",
            "firstlineno": 0,
        },
        {
            "id": "2",
            "kind": "function",
            "test": "tests/test_fx.py::test_fact",
            "path": "fx.py",
            "name": "square",
            "firstlineno": 8,
        },
        *(
            {"id": name, "kind": "test", "test": f"tests/test_fx.py::{test}", "path": "", "name": ""}
            for name, test in [
                ("state-a", "test_state"),
                ("state-b", "test_state"),
                ("identity", "test_identity"),
                ("random", "test_random"),
                ("resource", "test_with_resource"),
            ]
        ),
    ]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"root": str(root), "output": str(output), "entries": entries}))
    environment = {
        **os.environ,
        "PYTHONPATH": f"{plugin}{os.pathsep}{root}",
        "FORAGER_TRACE_REQUEST": str(request),
        "PYTHONHASHSEED": "0",
        "FX_TEARDOWNS": str(tmp_path / "teardowns.txt"),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "forager_tracer",
            "-p",
            "no:cacheprovider",
            "--assert=plain",
            "-q",
            "tests/test_fx.py",
        ],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Each entry point is recorded in forked children: the parent runs no test (nor reports one).
    assert "1 deselected" in run.stdout, run.stdout + run.stderr
    results = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert len(results) == 9 and results["0"]["status"] == "ok" and results["0"]["deterministic"]
    assert 0 < results.pop(tracer.USAGE_ID)["cpu_seconds"] < 60  # the run's CPU, the last line
    first_call = trace_format.cwm_frame(results["0"], results["0"]["frames"][0])
    assert first_call == '<|call_sep|>{"items": "[1, 2]"}<|action_sep|>def total(items):<|frame_sep|>'
    assert results["1"]["status"] == "ok"
    assert results["1"]["frames"][0][0] == "call"
    assert trace_format.context(results["1"]).startswith(
        "# tests/test_fx.py\ndef test_fact():  # << START_OF_TRACE\n    assert fact(2) == 2\n\n"
        "# fx.py\ndef fact(n):"
    )
    assert (results["2"]["status"], results["2"]["reason"]) == ("dropped", "not_called")
    # A child starts from the state collection left: what one recording of a test changed in a module
    # is not seen by the next one.
    for name in ("state-a", "state-b"):
        assert results[name]["deterministic"], name
        assert ["line", 0, 27, {"n": "0"}, None] in results[name]["frames"], results[name]["frames"]
    # A value that follows an object's identity differs between the two recordings (the second child
    # allocates first, as a fresh process would place objects elsewhere); `random` is seeded.
    assert (results["identity"]["status"], results["identity"]["deterministic"]) == ("ok", False)
    assert results["random"]["deterministic"]
    drawn = [f[3]["drawn"] for f in results["random"]["frames"] if f[3] and "drawn" in f[3]]
    assert drawn == [repr(random.Random(0).random())]
    # Each of the two children tears the test's fixtures down before it exits.
    assert results["resource"]["status"] == "ok"
    assert (tmp_path / "teardowns.txt").read_text() == "torn down\n" * 2


def test_the_tracer_needs_nothing_but_the_standard_library() -> None:
    source = Path(tracer.__file__).read_text()
    imported = {
        line.split()[1].split(".")[0]
        for line in textwrap.dedent(source).splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
