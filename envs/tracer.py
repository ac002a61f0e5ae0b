"""Record execution traces of Python functions, frame by frame, as CWM's trace format needs them.

Standard library only, and importable on Python 3.8: this file is copied into repository images at run
time and loaded there by pytest as a plugin (``-p forager_tracer``), inside the project's own
environment. It must never import Forager.

A *recording* starts when the entry function is called and ends when that call returns (or raises).
Every ``call``, ``line``, ``return`` and ``exception`` event of the entry frame and of the project's own
functions it reaches (files under the root, not in site-packages) becomes one frame
``[event, file, line, locals, value]``: ``locals`` (call and line frames) maps each local name to its
rendered value, with ``".."`` for a value rendered the same in the previous call or line frame of the
same scope (never across a call or a return: CWM's debugger resolves ``".."`` by looking back until the
last scope change); ``value`` (return and exception frames) is the rendered return value or exception.

Values are rendered as bounded reprs: containers of the builtin types item by item up to a count and a
depth, every text up to a length; a ``__repr__`` that raises gives ``<unrepresentable TYPE: ERROR>``;
memory addresses (`` at 0x7f...``, a mock's ``id='140...'``, a thread's ident) become `` at 0x..``
(``id='..'``, ``started ..``) so that a trace recorded twice can be identical.

With ``max_calls``, a function the recording already stepped into that many times is stepped over from
then on, as a library call is: a helper called in a loop shows its first calls, and the trace of the
loop stays within its budget. A recursive call (the function is on the recorded stack) is always
stepped into.
A recording that exceeds its frame budget or its wall-clock budget is dropped, as is one whose entry is
a generator or coroutine function (its scope ends at every ``yield``).
"""

from __future__ import annotations

import inspect
import itertools
import json
import linecache
import os
import random
import re
import resource
import select
import signal
import sys
import time

#: Memory addresses in reprs: ``<Foo object at 0x7f...>``, ``unittest.mock``'s ``id='140...'``, and a
#: ``threading.Thread``'s ident (its pthread's address): ``<Thread(name, started|stopped [daemon] 140...)>``.
_ADDRESS = re.compile(
    r" at 0x[0-9a-fA-F]+| id='[0-9]+'"
    r"|(?<=Thread\()(?P<thread>[^<>]*?(?:started|stopped)(?: daemon)?) [0-9]+(?=\)>)"
)
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_LIBRARY_DIRS = ("site-packages", "dist-packages")
#: Exact types whose repr is plain and cannot hold an address (a huge int's may raise: it is caught).
_NUMBERS = frozenset({int, float, bool, complex, type(None)})
_EMPTY = {list: "[]", tuple: "()", set: "set()", frozenset: "frozenset()", dict: "{}"}
_ELIDED = {list: "[...]", tuple: "(...)", set: "{...}", frozenset: "frozenset({...})", dict: "{...}"}


class TraceBudgetExceeded(BaseException):
    """Raised into the traced program when a recording runs out of wall-clock time.

    Checked at every event rather than by a SIGALRM timer, which the program's own handlers (pytest-timeout)
    would fight over. Code that makes no event for long (a C call,
    a ``__repr__`` that loops) is stopped by the caller's timeout on the whole run instead.

    A BaseException so that the program's ``except Exception`` does not swallow it and keep running.
    """


class TargetsDone(BaseException):
    """Raised into a test whose entry points are all recorded: the rest of it would only cost time."""


class Renderer:
    """Bounded, exception-safe reprs. Counts what it truncated and what it could not render."""

    def __init__(self, max_chars: int = 256, max_items: int = 32, max_depth: int = 4) -> None:
        self.max_chars = max_chars
        self.max_items = max_items
        self.max_depth = max_depth
        self.truncated = 0
        self.unrepresentable = 0

    def render(self, value: object) -> str:
        try:
            # Numbers first and at once: most values are, and this runs for every local at every line.
            text = repr(value) if type(value) in _NUMBERS else self._render(value, 0, set())
        except TraceBudgetExceeded:
            raise
        except BaseException as exc:
            self.unrepresentable += 1
            return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
        if "0x" in text or "id='" in text or "Thread(" in text:
            text = _ADDRESS.sub(_unaddressed, text)
        if len(text) > self.max_chars:
            self.truncated += 1
            text = text[: self.max_chars] + "..."
        return text

    def _render(self, value: object, depth: int, active: set) -> str:
        kind = type(value)
        if kind in _NUMBERS:
            return repr(value)
        if kind in (str, bytes, bytearray):
            if len(value) > self.max_chars:  # type: ignore[arg-type]
                self.truncated += 1
                return repr(value[: self.max_chars]) + "..."  # type: ignore[index]
            return repr(value)
        if kind not in _EMPTY:  # exact builtin containers only: a subclass may have its own repr
            text = repr(value)
            if not isinstance(text, str):
                raise TypeError("__repr__ returned non-string")
            return text
        if not value:  # type: ignore[truthy-function]
            return _EMPTY[kind]
        if id(value) in active or depth >= self.max_depth:
            if id(value) not in active:
                self.truncated += 1
            return _ELIDED[kind]
        if len(value) <= self.max_items and (
            self._flat(value.keys()) and self._flat(value.values()) if kind is dict else self._flat(value)
        ):
            return repr(value)  # the same text as item by item below, at the speed of the builtin repr
        active.add(id(value))
        try:
            items = value.items() if kind is dict else value  # type: ignore[attr-defined]
            head = list(itertools.islice(items, self.max_items + 1))  # type: ignore[call-overload]
            parts = []
            size = 0
            for item in head[: self.max_items]:
                if kind is dict:
                    text = (
                        self._render(item[0], depth + 1, active)
                        + ": "
                        + self._render(item[1], depth + 1, active)
                    )
                else:
                    text = self._render(item, depth + 1, active)
                parts.append(text)
                size += len(text) + 2
                if size > self.max_chars:  # the whole is cut there anyway: rendering more only costs time
                    break
            if len(parts) < len(head):
                self.truncated += 1
                parts.append("...")
        finally:
            active.discard(id(value))
        inner = ", ".join(parts)
        if kind is list:
            return "[" + inner + "]"
        if kind is tuple:
            return "(" + inner + ("," if len(parts) == 1 else "") + ")"
        if kind is frozenset:
            return "frozenset({" + inner + "})"
        return "{" + inner + "}"

    def _flat(self, items) -> bool:
        """Whether every item is a number or a string within the length cap."""
        limit = self.max_chars
        for item in items:
            kind = type(item)
            if kind not in _NUMBERS and (kind is not str or len(item) > limit):
                return False
        return True


def _unaddressed(match) -> str:
    found = match.group(0)
    if match.group("thread") is not None:
        return match.group("thread") + " .."
    return " at 0x.." if found.startswith(" at") else " id='..'"


class Target:
    """An entry function: matched by its code object, or by file, name and first line."""

    def __init__(
        self, key: str, *, code: object = None, filename: str = "", name: str = "", firstlineno: int = 0
    ) -> None:
        self.key = key
        self.code = code
        self.filename = filename
        self.name = name
        self.firstlineno = firstlineno

    def matches(self, code: object) -> bool:
        if self.code is not None:
            return code is self.code
        return (
            code.co_firstlineno == self.firstlineno
            and code.co_name == self.name  # type: ignore[attr-defined]
            and code.co_filename == self.filename
        )  # type: ignore[attr-defined]


class _Recording:
    def __init__(self, target: Target, frame: object) -> None:
        self.target = target
        self.entry = frame
        self.frames: list = []
        self.files: list = []
        self.file_index: dict = {}
        self.blocks: list = []
        self.source: dict = {}
        self.previous: dict | None = None
        self.started = time.monotonic()
        self.deadline = float("inf")
        self.reason = ""
        self.calls: dict = {}
        """Code object → calls of it stepped into."""
        self.stepped_over = 0
        self.skipping = None
        """The frame of the call being stepped over, until it returns."""


class Tracer:
    """Records the first call of each target made while armed (``start`` ... ``stop``).

    One recording at a time: a target called while another is being recorded is recorded only if it is
    called again later, so callers give one target per test (``envs.traces`` does).
    """

    def __init__(
        self,
        root: str,
        *,
        max_frames: int = 2000,
        max_seconds: float = 10.0,
        max_calls: int = 0,
        renderer: Renderer | None = None,
    ) -> None:
        self.root = os.path.realpath(root)
        self.max_frames = max_frames
        self.max_seconds = max_seconds
        self.max_calls = max_calls
        self.renderer_options = renderer or Renderer()
        self.results: list = []
        self._targets: list = []
        self._active: _Recording | None = None
        self._renderer = self.renderer_options
        self._project: dict = {}
        self._paths: dict = {}
        self._blocks: dict = {}
        self._previous_trace = None
        self._stop_when_done = False

    # -- arming ------------------------------------------------------------------------------------

    def start(self, targets: list, *, stop_when_done: bool = False) -> None:
        """Arm for ``targets``. ``stop_when_done``: once every target is recorded, end the program (a
        test whose rest is of no use) by raising ``TargetsDone`` at its next call."""
        self._targets = list(targets)
        self._stop_when_done = stop_when_done
        self.results = []
        self._previous_trace = sys.gettrace()
        sys.settrace(self._global)

    def stop(self) -> list:
        sys.settrace(self._previous_trace)
        if self._active is not None:
            self._finish(self._active, self._active.reason or "unfinished")
        return self.results

    # -- trace functions ---------------------------------------------------------------------------

    def _global(self, frame, event, arg):
        recording = self._active
        code = frame.f_code
        if recording is None:
            for target in self._targets:
                if target.matches(code):
                    break
            else:
                if self._stop_when_done and not self._targets:
                    raise TargetsDone("every entry point of this test is recorded")
                return None
            self._targets.remove(target)  # the first call of each target only
            recording = _Recording(target, frame)
            if code.co_flags & _SUSPENDABLE:
                self._finish(recording, "generator")
                return None
            self._begin(recording)
        elif recording.reason:
            return None
        elif (
            recording.skipping is not None
            or not self._is_project(code)
            or code.co_name == "<module>"  # an import runs a module body
        ):
            # Code stepped over makes no event of its own: its time is checked when it calls.
            if time.monotonic() > recording.deadline:
                self._over_time(recording)
            return None
        elif self.max_calls and self._steps_over(recording, frame):
            return self._skipped
        self._event(recording, frame, "call", None)
        return self._local

    def _steps_over(self, recording: _Recording, frame) -> bool:
        """Whether to step over this call of a project function: stepped into ``max_calls`` times
        already in this recording, and not a recursive call."""
        code = frame.f_code
        seen = recording.calls.get(code, 0)
        if seen < self.max_calls:
            recording.calls[code] = seen + 1
            return False
        caller = frame.f_back
        while caller is not None:
            if caller.f_code is code:
                return False
            if caller is recording.entry:
                break
            caller = caller.f_back
        recording.stepped_over += 1
        recording.skipping = frame
        frame.f_trace_lines = False  # only its return matters: no event per line it runs
        return True

    def _skipped(self, frame, event, arg):
        """The local trace function of a call stepped over: waits for it to return."""
        recording = self._active
        if recording is not None and event == "return" and frame is recording.skipping:
            recording.skipping = None
            return None
        return self._skipped

    def _local(self, frame, event, arg):
        recording = self._active
        if recording is None or recording.reason:
            return None
        self._event(recording, frame, event, arg)
        if event == "return" and frame is recording.entry:
            self._finish(recording, "")
            return None
        return self._local

    def _event(self, recording: _Recording, frame, event: str, arg) -> None:
        code = frame.f_code
        shown = value = None
        if event in ("call", "line"):
            current = {name: self._renderer.render(v) for name, v in frame.f_locals.items()}
            previous = recording.previous
            if event == "line" and previous is not None:
                shown = {name: ".." if previous.get(name) == text else text for name, text in current.items()}
            else:
                shown = current
            recording.previous = current
        elif event == "return":
            value = self._renderer.render(arg)
            recording.previous = None
        elif event == "exception":
            value = self._renderer.render(arg[1] if arg[1] is not None else arg[0])
        else:
            return
        path = self._paths.get(code.co_filename)
        if path is None:  # resolved once per file: realpath makes a system call per path component
            path = self._paths[code.co_filename] = self._path(code.co_filename)
        index = recording.file_index.get(path)
        if index is None:
            index = recording.file_index[path] = len(recording.files)
            recording.files.append(path)
            recording.source[path] = {}
        if event == "call":
            self._add_block(recording, code, path)
        line = frame.f_lineno
        lines = recording.source[path]
        if str(line) not in lines:
            lines[str(line)] = linecache.getline(code.co_filename, line).rstrip("\r\n")
        recording.frames.append([event, index, line, shown, value])
        if len(recording.frames) > self.max_frames:
            recording.reason = "frames"
            self._finish(recording, "frames")
        elif time.monotonic() > recording.deadline:
            self._over_time(recording)

    def _over_time(self, recording: _Recording) -> None:
        """Drop the recording and stop the program too: a trace over its time is most often a loop that
        never ends. Raised from a trace function, the exception goes into the traced frame."""
        recording.reason = "wall_clock"
        self._finish(recording, "wall_clock")
        raise TraceBudgetExceeded("the trace ran out of its wall-clock budget")

    # -- recordings --------------------------------------------------------------------------------

    def _begin(self, recording: _Recording) -> None:
        self._active = recording
        recording.deadline = recording.started + self.max_seconds if self.max_seconds else float("inf")
        self._renderer = Renderer(
            self.renderer_options.max_chars, self.renderer_options.max_items, self.renderer_options.max_depth
        )

    def _finish(self, recording: _Recording, reason: str) -> None:
        if self._active is recording:
            self._active = None
        target = recording.target
        result = {
            "id": target.key,
            "status": "dropped" if reason else "ok",
            "reason": reason,
            "seconds": round(time.monotonic() - recording.started, 6),
        }
        if not reason:
            result.update(
                files=recording.files,
                blocks=recording.blocks,
                source=recording.source,
                frames=recording.frames,
                truncated=self._renderer.truncated,
                unrepresentable=self._renderer.unrepresentable,
                stepped_over=recording.stepped_over,
            )
        self.results.append(result)

    # -- where code lives --------------------------------------------------------------------------

    def _is_project(self, code) -> bool:
        known = self._project.get(code.co_filename)
        if known is None:
            filename = code.co_filename
            real = os.path.realpath(filename) if not filename.startswith("<") else ""
            parts = real.split(os.sep)
            known = real.startswith(self.root + os.sep) and not any(d in parts for d in _LIBRARY_DIRS)
            self._project[filename] = known
        return known

    def _path(self, filename: str) -> str:
        real = os.path.realpath(filename)
        return os.path.relpath(real, self.root).replace(os.sep, "/") if real.startswith(self.root) else real

    def _add_block(self, recording: _Recording, code, path: str) -> None:
        """The lines of the function ``code`` belongs to, once per recording (nested ones inside it)."""
        block = self._blocks.get(code)
        if block is None:
            try:
                lines, first = inspect.getsourcelines(code)
            except (OSError, TypeError, IndexError, SyntaxError):
                lines, first = [], 0
            block = self._blocks[code] = (first, [line.rstrip("\r\n") for line in lines])
        first, lines = block
        if not lines:
            return
        last = first + len(lines) - 1
        for known_path, known_first, known_last in recording.blocks:
            if known_path == path and known_first <= first and last <= known_last:
                return
        recording.blocks.append([path, first, last])
        source = recording.source[path]
        for number, text in enumerate(lines, first):
            source[str(number)] = text


def trace_call(
    root: str,
    function,
    *args,
    max_frames: int = 2000,
    max_seconds: float = 10.0,
    max_calls: int = 0,
    renderer: Renderer | None = None,
    **kwargs,
) -> dict:
    """Call ``function(*args, **kwargs)`` and return the recording of that call (the result dict).

    An exception the function raises is swallowed: the recording shows it.
    """
    tracer = Tracer(
        root, max_frames=max_frames, max_seconds=max_seconds, max_calls=max_calls, renderer=renderer
    )
    tracer.start([Target("entry", code=getattr(function, "__code__", None))])
    try:
        function(*args, **kwargs)
    except BaseException:
        pass
    finally:
        results = tracer.stop()
    return results[0] if results else {"id": "entry", "status": "dropped", "reason": "not_called"}


# -- the pytest plugin: FORAGER_TRACE_REQUEST names a JSON request ----------------------------------------
#
# The parent pytest process collects (imports the test modules once), then forks a child per entry point
# that sets up the test's fixtures and runs it with the tracer armed for that one entry. A child starts
# from the state collection left, never from what an earlier test did, and a second child records the
# entry again from that same state: a trace is kept only if the two agree. The second child first
# allocates a little (so objects land at other addresses, as in a fresh process: values that follow
# object identities, like the default ``hash``, show as non-deterministic); both seed ``random``.

_PLUGIN: dict = {}
#: The id of the output's last line, the run's CPU time (entry points are numbered).
USAGE_ID = "usage"
#: Seconds a child may take on top of the trace's own budget (the test's fixtures, pytest's reporting).
CHILD_GRACE = 60.0


def pytest_configure(config) -> None:
    path = os.environ.get("FORAGER_TRACE_REQUEST")
    if not path:
        return
    with open(path) as file:
        request = json.load(file)
    by_test: dict = {}
    for entry in request["entries"]:
        by_test.setdefault(entry["test"], []).append(entry)
    budget = request.get("budget", {})
    _PLUGIN.update(
        by_test=by_test,
        output=request["output"],
        root=request["root"],
        budget=budget,
        check=request.get("check_determinism", True),
    )


def pytest_collection_modifyitems(session, config, items) -> None:
    """Run only the requested tests (the command names their files, which may hold others)."""
    if not _PLUGIN:
        return
    wanted = _PLUGIN["by_test"]
    kept = [item for item in items if item.nodeid in wanted]
    dropped = [item for item in items if item.nodeid not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def pytest_runtest_protocol(item, nextitem):
    """Record each entry point of ``item`` in forked children; the parent never runs the test itself."""
    entries = _PLUGIN.get("by_test", {}).get(item.nodeid)
    if not entries:
        return None
    budget = _PLUGIN["budget"]
    limit = budget.get("max_seconds", 10.0) + CHILD_GRACE
    with open(_PLUGIN["output"], "a") as output:
        for entry in entries:
            first = _in_child(item, entry, False, limit)
            if first.get("status") == "ok" and _PLUGIN["check"]:
                second = _in_child(item, entry, True, limit)
                first["divergence"] = _divergence(first, second)
                first["deterministic"] = first["divergence"] is None
            output.write(json.dumps(first) + "\n")
            output.flush()
    return True


def pytest_sessionfinish(session, exitstatus) -> None:
    """Last, the CPU the run took: this process's and its reaped children's (every recording)."""
    if not _PLUGIN:
        return
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    with open(_PLUGIN["output"], "a") as output:
        output.write(json.dumps({"id": USAGE_ID, "cpu_seconds": round(seconds, 3)}) + "\n")


def _divergence(first: dict, second: dict):
    """Where a second recording differs from the first (None if it does not): the first frame that
    differs, as each recording has it, so that the cause can be read off a dropped trace."""
    if second.get("status") != "ok":
        return {"frame": None, "second": second.get("reason", "")}
    frames, others = first["frames"], second["frames"]
    for number in range(max(len(frames), len(others))):
        if number >= len(frames) or number >= len(others) or frames[number] != others[number]:
            return {
                "frame": number,
                "first": frames[number] if number < len(frames) else None,
                "second": others[number] if number < len(others) else None,
                "second_files": second["files"],
            }
    if any(first[name] != second[name] for name in ("files", "blocks", "source")):
        return {"frame": None, "second": "the same frames from other source lines"}
    return None


def _in_child(item, entry: dict, perturb: bool, limit: float) -> dict:
    """Run ``item`` in a forked child recording ``entry``: the child's result, or why there is none."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: record, hand the result over, and leave without any cleanup of the parent's
        os.close(read)
        code = 1
        try:
            ballast = _ballast() if perturb else None
            result = _record_in_child(item, entry)
            del ballast
            with os.fdopen(write, "w") as pipe:
                pipe.write(json.dumps(result))
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    deadline = time.monotonic() + limit
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"id": entry["id"], "status": "dropped", "reason": "timeout"}
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
    os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"id": entry["id"], "status": "dropped", "reason": "crashed"}


def _ballast() -> list:
    """Objects of every small size, kept alive, so that later allocations get other addresses."""
    return [bytes(size) for size in range(0, 1024, 8) for _ in range(3)] + [object() for _ in range(97)]


def _record_in_child(item, entry: dict) -> dict:
    """Set up the test's fixtures, then run it with the tracer armed for ``entry`` alone. Armed and
    disarmed here, around pytest's call phase, rather than in report hooks: a test's subtests make
    reports of their own while it runs."""
    # pytest's own runner (pytest-forked uses it too); imported here: the tracer itself needs no pytest.
    from _pytest.runner import call_and_report

    random.seed(0)  # a test drawing random numbers without a seed draws the same ones in every recording
    if not call_and_report(item, "setup", log=False).passed:
        return {"id": entry["id"], "status": "dropped", "reason": "not_called"}
    budget = _PLUGIN["budget"]
    tracer = Tracer(
        _PLUGIN["root"],
        max_frames=budget.get("max_frames", 2000),
        max_seconds=budget.get("max_seconds", 10.0),
        max_calls=budget.get("max_calls", 0),
        renderer=Renderer(
            budget.get("max_chars", 256), budget.get("max_items", 32), budget.get("max_depth", 4)
        ),
    )
    # Once the entry point is recorded (or dropped: over its frame budget), the rest of the test is waste.
    tracer.start([_target(item, entry)], stop_when_done=True)
    try:
        call_and_report(item, "call", log=False)
    finally:
        results = tracer.stop()
        # The child exits next, but what the fixtures started (servers, subprocesses) would outlive it:
        # two children per entry point, hundreds a run, ports and processes piling up in the environment.
        call_and_report(item, "teardown", log=False, nextitem=None)
    return results[0] if results else {"id": entry["id"], "status": "dropped", "reason": "not_called"}


def _target(item, entry: dict) -> Target:
    if entry.get("kind") == "test":
        function = getattr(item, "obj", None)
        function = inspect.unwrap(getattr(function, "__func__", function))
        return Target(entry["id"], code=getattr(function, "__code__", None))
    return Target(
        entry["id"],
        filename=os.path.join(_PLUGIN["root"], entry["path"]),
        name=entry["name"],
        firstlineno=entry["firstlineno"],
    )
