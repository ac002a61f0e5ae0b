"""Per-test outcomes from the verbose output of unittest's text runner.

``python -m unittest -v`` and the scripts that call unittest's runner themselves (Django's
``tests/runtests.py --verbosity 2``) print one line per test::

    test_add (tests.test_calc.CalcTest.test_add) ... ok
    test_div (tests.test_calc.CalcTest.test_div)
    Division by zero raises. ... FAIL

Python < 3.11 writes ``(tests.test_calc.CalcTest)`` without the method. A test id is the label the
runner accepts back on its command line: ``tests.test_calc.CalcTest.test_add``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from images.baseline import SEVERITY, Outcome, unit_of

#: The start of a test's line: its method name and where it is, at the start of a line.
_HEADER = re.compile(r"^(?P<name>[\w.]+) \((?P<where>[\w.]+)\)")
#: A result, after `` ... `` or alone on a line (a test's own print can come between the two).
_RESULT = re.compile(
    r"(?:^|\.\.\. )(?P<result>ok|FAIL|ERROR|skipped\b.*|expected failure|unexpected success)$"
)
#: expected failure is skipped and unexpected success failed, as pytest reports unittest's.
_OUTCOMES: dict[str, Outcome] = {
    "ok": "passed",
    "FAIL": "failed",
    "ERROR": "error",
    "skipped": "skipped",
    "expected failure": "skipped",
    "unexpected success": "failed",
}
#: What unittest reports in place of a module it could not import.
_FAILED_IMPORT = ("unittest.loader._FailedTest", "unittest.loader.ModuleImportFailure")
#: Fixtures of a class or module: not tests, and not labels a runner accepts.
_FIXTURES = frozenset({"setUpClass", "tearDownClass", "setUpModule", "tearDownModule"})


@dataclass
class VerboseRun:
    """What one verbose run reported, in order of appearance."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    import_errors: list[str] = field(default_factory=list)
    """Modules unittest could not import (each reported as one ``_FailedTest`` error)."""
    unfinished: str | None = None
    """A test whose line started but never got its result: the run was killed in it."""


def parse_verbose(output: str) -> VerboseRun:
    """The per-test outcomes of a verbose unittest run (see the module docstring).

    A test reported twice keeps its worst outcome. Import failures are collected apart, fixture errors
    (``setUpClass``) are left out: their tests are then missing, as they never ran.
    """
    run = VerboseRun()
    pending: str | None = None
    for line in output.replace("\r\n", "\n").split("\n"):
        header = _HEADER.match(line)
        rest = line
        if header:
            pending = _test_id(header["name"], header["where"])
            rest = line[header.end() :]
        result = _RESULT.search(rest.rstrip())
        if pending is None or result is None:
            continue
        word = result["result"]
        outcome = _OUTCOMES["skipped" if word.startswith("skipped") else word]
        where = header["where"] if header else ""
        if where.startswith(_FAILED_IMPORT) or pending.startswith(_FAILED_IMPORT):
            run.import_errors.append(header["name"] if header else pending)
        elif pending.rsplit(".", 1)[-1] not in _FIXTURES:
            previous = run.outcomes.get(pending)
            if previous is None or SEVERITY[outcome] > SEVERITY[previous]:
                run.outcomes[pending] = outcome
        pending = None
    run.unfinished = pending
    return run


def _test_id(name: str, where: str) -> str:
    # 3.11+: "(module.Class.method)"; before: "(module.Class)".
    return where if where.endswith(f".{name}") else f"{where}.{name}"


def completed_modules(run: VerboseRun) -> VerboseRun:
    """``run`` without the module it was killed in: unittest runs module after module, so every module
    before the last one reported finished."""
    modules = [unit_of(test) for test in run.outcomes]
    last = unit_of(run.unfinished) if run.unfinished else (modules[-1] if modules else None)
    kept = {test: outcome for test, outcome in run.outcomes.items() if unit_of(test) != last}
    return VerboseRun(kept, list(run.import_errors), None)
