"""Execution traces from repository images: choose entry points, record them in containers, store them.

Entry points come from the image's own tests: each stable passing test is one (``kind="test"``: the
test function is traced), and each repository function the per-test coverage says a test executes is
another (``kind="function"``: its first call in that test is traced, with the arguments the test really
passed). Entry points are sampled with a seed and capped per image.

The tracer (``envs/tracer.py``, standard library only) is copied into the environment and loaded by the
image's own pytest as a plugin; one pytest run collects the tests of many entry points once and records
each in a process forked from it, twice, with the hash seed fixed: an entry point whose two recordings
differ is dropped as non-deterministic. Each run's traces are stored at once, kept or dropped, so an
interrupted ``make`` resumes where it stopped: entry points already stored are never run again.
"""

from __future__ import annotations

import ast
import itertools
import json
import random
import shlex
import threading
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from envs import trace_format
from envs import tracer as tracer_module
from envs.backend import Backend, Limits
from envs.coverage import Coverage
from envs.grading import is_test_path, pytest_base
from envs.mutate_fix import cached_coverage
from envs.runtime import Runtime
from images.baseline import Baseline
from storage import Image, Store
from storage.models import Trace, TraceKind, TraceStatus

#: Where the tracer and its requests live in the environment (outside the repository).
TRACER_DIR = "/tmp/forager-tracer"
#: A fixed pytest temporary directory: pytest's default numbers a new one per run, which would make
#: every ``tmp_path`` differ between the two recordings.
_BASETEMP = "/tmp/forager-trace-tmp"
#: The tracer as a plugin; random test order and per-test random seeds (pytest-randomly) off, since a
#: recording must come out the same twice; assertions as written, not rewritten into temporaries that
#: would show among a test's locals. Naming an absent plugin with ``no:`` is harmless.
_PYTEST_OPTIONS = (
    *("-p", "forager_tracer", "-p", "no:cacheprovider", "-p", "no:randomly"),
    *("--assert=plain", f"--basetemp={_BASETEMP}", "-q", "-rN", "--color=no"),
)


@dataclass(frozen=True)
class TraceOptions:
    """What to trace in one image and within which budgets."""

    max_per_image: int = 100
    kinds: tuple[str, ...] = (TraceKind.FUNCTION, TraceKind.TEST)
    seed: int = 0
    workers: int = 2
    """Environments tracing one image at the same time."""
    entries_per_run: int = 100
    """Entry points one pytest run takes: each run costs an interpreter start and the tests' collection;
    every entry point is then recorded in processes forked from it."""
    max_frames: int = 2000
    max_seconds: float = 10.0
    """Wall-clock seconds one trace may take."""
    max_calls: int = 5
    """Calls of one function a trace steps into; later ones are stepped over, as library calls are
    (recursive calls never are). 0: every call. A helper called in a loop would otherwise fill the
    frame budget with its thousandth call, which tells a reader nothing its first ones did not."""
    max_chars: int = 256
    max_items: int = 32
    max_depth: int = 4
    check_determinism: bool = True
    limits: Limits | None = None


@dataclass(frozen=True)
class Entry:
    """One entry point: a test, or a function run by a test (first line counts decorators)."""

    kind: str
    test: str
    path: str
    qualname: str
    line: int = 0
    firstlineno: int = 0

    def key(self, image_id: int) -> str:
        if self.kind == TraceKind.TEST:
            return f"{image_id}|test|{self.test}"
        return f"{image_id}|function|{self.test}|{self.path}::{self.qualname}"


@dataclass
class ImageReport:
    """What tracing one image gave."""

    image: str
    entries: int = 0
    """Entry points chosen."""
    resumed: int = 0
    """Of those, already stored by an earlier run."""
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    frames: list[int] = field(default_factory=list)
    stored_bytes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU the tracing runs took in the environments (their pytest processes and forks)."""
    error: str = ""


def make_traces(
    backend: Backend,
    store: Store,
    image: Image,
    options: TraceOptions,
    *,
    cache_dir: Path,
    progress: Progress = no_progress,
) -> ImageReport:
    """Trace up to ``options.max_per_image`` entry points of ``image`` and store each as it is recorded."""
    if not image.test_command:
        raise ForagerError(f"image {image.tag} has no test command: its tests cannot be traced")
    passing = frozenset(
        Baseline.from_json({"outcomes": image.baseline, "flaky": image.flaky}).stable("passed")
    )
    if not passing:
        raise ForagerError(f"image {image.tag} has no stable passing test to trace")
    report = ImageReport(image.tag)
    subject = image.repository.name
    started = time.monotonic()
    env = _start(backend, image, options, "trace")
    try:
        progress(ProgressEvent(subject, "coverage", "measuring which tests cover which functions"))
        coverage = cached_coverage(env, image, cache_dir)
        entries = select_entries(coverage, _sources(env, coverage), passing, options)
        report.entries = len(entries)
        done = store.trace_keys(image.id)
        pending = [entry for entry in entries if entry.key(image.id) not in done]
        report.resumed = len(entries) - len(pending)
        runs = _runs(pending, options.entries_per_run, options.workers)
        tracker = _Tracker(report, subject, len(pending), progress)
        tracker.update()
        queue = list(reversed(runs))
        lock = threading.Lock()

        def work(runtime: Runtime | None) -> None:
            own = runtime is None
            try:
                while True:
                    with lock:
                        if not queue:
                            return
                        run = queue.pop()
                    if runtime is None:
                        runtime = _start(backend, image, options, "trace")
                        _install(runtime)
                    traces, cpu = trace_run(runtime, image, run, options)
                    store.add_traces(traces)
                    tracker.add(traces, cpu)
            finally:
                if own and runtime is not None:
                    runtime.close()

        _install(env)
        workers = max(1, min(options.workers, len(runs)))
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(work, env if n == 0 else None) for n in range(workers)]
            for future in futures:
                future.result()
    finally:
        env.close()
    report.seconds = time.monotonic() - started
    progress(
        ProgressEvent(subject, "done", f"{report.kept} traces kept, {sum(report.dropped.values())} dropped")
    )
    return report


def _start(backend: Backend, image: Image, options: TraceOptions, purpose: str) -> Runtime:
    """The one place an environment is started for tracing."""
    return backend.start(image.tag, episode=f"{purpose}-{image.id}", limits=options.limits)


def _install(runtime: Runtime) -> None:
    runtime.write_file(f"{TRACER_DIR}/forager_tracer.py", Path(tracer_module.__file__).read_bytes())


class _Tracker:
    """Counts what the runs gave and reports progress; runs end in several threads."""

    def __init__(self, report: ImageReport, subject: str, total: int, progress: Progress) -> None:
        self.report, self.subject, self.total, self.progress = report, subject, total, progress
        self.lock = threading.Lock()
        self.done = 0

    def add(self, traces: Sequence[Trace], cpu_seconds: float) -> None:
        with self.lock:
            self.report.cpu_seconds += cpu_seconds
            for trace in traces:
                self.done += 1
                if trace.status == TraceStatus.OK:
                    self.report.kept += 1
                    self.report.frames.append(trace.n_frames)
                    self.report.stored_bytes += len(_compressed(trace))
                else:
                    self.report.dropped[trace.drop_reason] += 1
            self.update()

    def update(self) -> None:
        message = f"{self.done}/{self.total} entry points, {self.report.kept} kept"
        self.progress(ProgressEvent(self.subject, "trace", message, self.done, self.total))


def _compressed(trace: Trace) -> bytes:
    """The bytes a kept trace takes in the store (its recording and context, compressed as stored)."""
    text = json.dumps(trace.data, ensure_ascii=False, separators=(",", ":")) + trace.context
    return zlib.compress(text.encode("utf-8", "surrogatepass"))


# -- choosing entry points --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Function:
    qualname: str
    firstlineno: int
    line: int
    body_start: int
    end: int


def functions(source: str) -> list[_Function]:
    """The plain functions of a module that a trace can enter: generators and coroutines excluded (their
    scope ends at every ``yield``), nested ones included. ``firstlineno`` counts decorators, as Python's
    code objects do."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: list[_Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualname = f"{prefix}{child.name}"
                if isinstance(child, ast.FunctionDef) and not _yields(child):
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    found.append(
                        _Function(qualname, first, child.lineno, child.body[0].lineno, child.end_lineno or 0)
                    )
                visit(child, f"{qualname}.<locals>.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _yields(function: ast.FunctionDef) -> bool:
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Yield | ast.YieldFrom):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _sources(env: Runtime, coverage: Coverage) -> dict[str, str]:
    """The repository's covered non-test modules, read from the environment."""
    sources: dict[str, str] = {}
    for path in sorted(coverage.lines):
        if path.endswith(".py") and not is_test_path(path):
            try:
                sources[path] = env.read_file(path).decode("utf-8")
            except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
                continue
    return sources


def select_entries(
    coverage: Coverage, sources: dict[str, str], passing: frozenset[str], options: TraceOptions
) -> list[Entry]:
    """Up to ``options.max_per_image`` entry points, functions and tests taking turns, sampled by seed.

    Each function is traced in one test, picked at random among the passing ones that execute its body.
    """
    rng = random.Random(options.seed)
    function_entries: list[Entry] = []
    if TraceKind.FUNCTION in options.kinds:
        for path, source in sources.items():
            for function in functions(source):
                covering = sorted(coverage.tests_covering(path, function.body_start, function.end) & passing)
                if covering:
                    function_entries.append(
                        Entry(
                            TraceKind.FUNCTION,
                            rng.choice(covering),
                            path,
                            function.qualname,
                            function.line,
                            function.firstlineno,
                        )
                    )
    test_entries: list[Entry] = []
    if TraceKind.TEST in options.kinds:
        for test in sorted(passing):
            path, _, name = test.partition("::")
            test_entries.append(Entry(TraceKind.TEST, test, path, name.partition("[")[0].replace("::", ".")))
    rng.shuffle(function_entries)
    rng.shuffle(test_entries)
    turns = itertools.zip_longest(function_entries, test_entries)
    chosen = [entry for pair in turns for entry in pair if entry is not None]
    return chosen[: options.max_per_image]


def _runs(entries: Sequence[Entry], entries_per_run: int, workers: int) -> list[list[Entry]]:
    """Entry points in runs of at most ``entries_per_run``, sorted by test so that a run names few test
    files (it collects only those), and at least two runs per worker when there are enough entry points,
    so that no environment idles while another ends a long run."""
    ordered = sorted(entries, key=lambda entry: (entry.test, entry.kind, entry.path, entry.qualname))
    if not ordered:
        return []
    count = max(-(-len(ordered) // entries_per_run), min(2 * workers, -(-len(ordered) // 10)))
    size = -(-len(ordered) // count)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


# -- recording ----------------------------------------------------------------------------------------------


def trace_run(
    runtime: Runtime, image: Image, entries: Sequence[Entry], options: TraceOptions
) -> tuple[list[Trace], float]:
    """Record ``entries`` in ``runtime`` (each twice from the same state, if determinism is checked):
    their rows, and the CPU seconds the run took in the environment (0.0 if unknown)."""
    numbered = {str(n): entry for n, entry in enumerate(entries)}
    results, finished = record(runtime, image.test_command or "", numbered, options)
    cpu = float(results.get(tracer_module.USAGE_ID, {}).get("cpu_seconds", 0.0))
    # An entry a run cut short never reached is no crash of its own: unstored, a resumed run tries it.
    reached = numbered if finished else {n: e for n, e in numbered.items() if n in results}
    return [_row(image, entry, results.get(n), options) for n, entry in reached.items()], cpu


def record(
    runtime: Runtime, test_command: str, entries: dict[str, Entry], options: TraceOptions
) -> tuple[dict[str, dict[str, Any]], bool]:
    """One pytest run recording ``entries`` (by id): the tracer's result per id (absent if it crashed or
    the run never reached it), and whether the run finished rather than being cut at its time limit."""
    output = f"{TRACER_DIR}/traces.jsonl"
    request = {
        "root": runtime.workdir,
        "output": output,
        "check_determinism": options.check_determinism,
        "budget": {
            "max_frames": options.max_frames,
            "max_seconds": options.max_seconds,
            "max_calls": options.max_calls,
            "max_chars": options.max_chars,
            "max_items": options.max_items,
            "max_depth": options.max_depth,
        },
        "entries": [
            {
                "id": str(n),
                "kind": str(entry.kind),
                "test": entry.test,
                "path": entry.path,
                "name": entry.qualname.rpartition(".")[2],
                "firstlineno": entry.firstlineno,
            }
            for n, entry in entries.items()
        ],
    }
    request_path = f"{TRACER_DIR}/request.json"
    runtime.write_file(request_path, json.dumps(request).encode())
    files = list(dict.fromkeys(entry.test.split("::", 1)[0] for entry in entries.values()))
    command = (
        f"rm -f {output}; rm -rf {_BASETEMP}; cd {shlex.quote(runtime.workdir)} && PYTHONHASHSEED=0 "
        f"PYTHONPATH={TRACER_DIR}${{PYTHONPATH:+:$PYTHONPATH}} FORAGER_TRACE_REQUEST={request_path} "
        f"{shlex.join(pytest_base(test_command))} {shlex.join(_PYTEST_OPTIONS)} {shlex.join(files)}"
    )
    # Each entry is recorded by up to two children, each allowed its budget plus the tracer's grace.
    per_entry = 2 * (options.max_seconds + tracer_module.CHILD_GRACE)
    ran = runtime.run(command, timeout=120 + per_entry * len(entries))
    try:
        lines = runtime.read_file(output).decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return {}, not ran.timed_out
    results: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash mid-write
        results.setdefault(result["id"], result)
    return results, not ran.timed_out


_RECORDING_FIELDS = ("files", "blocks", "source", "frames")


def _row(
    image: Image,
    entry: Entry,
    first: dict[str, Any] | None,
    options: TraceOptions,
) -> Trace:
    row = Trace(
        image_id=image.id,
        key=entry.key(image.id),
        kind=entry.kind,
        test=entry.test,
        path=entry.path,
        qualname=entry.qualname,
        line=entry.line,
        status=TraceStatus.DROPPED,
        drop_reason="",
        deterministic=None,
        n_frames=0,
        truncated_values=0,
        unrepresentable_values=0,
        seconds=0.0,
        context="",
        data=None,
    )
    if first is None:
        row.drop_reason = "crashed"
        return row
    row.seconds = first.get("seconds", 0.0)
    if first["status"] != "ok":
        row.drop_reason = first["reason"]
        return row
    data = {name: first[name] for name in _RECORDING_FIELDS}
    if first.get("stepped_over"):
        data["stepped_over"] = first["stepped_over"]
    row.data = data
    row.context = trace_format.context(data)
    row.n_frames = len(data["frames"])
    row.truncated_values = first.get("truncated", 0)
    row.unrepresentable_values = first.get("unrepresentable", 0)
    if entry.kind == TraceKind.TEST and data["blocks"]:
        row.line = _definition_line(data)
    if options.check_determinism:
        row.deterministic = bool(first.get("deterministic"))
        if not row.deterministic:
            # Kept (not exported) with where the second recording went another way: the cause shows.
            data["divergence"] = first.get("divergence")
            row.drop_reason = "nondeterministic"
            return row
    row.status = TraceStatus.OK
    return row


def _definition_line(data: dict[str, Any]) -> int:
    """The ``def`` line of the entry's block (a test's, which the host does not parse)."""
    path, first, last = data["blocks"][0]
    for number in range(first, last + 1):
        if data["source"][path].get(str(number), "").lstrip().startswith(("def ", "async def ")):
            return number
    return first
