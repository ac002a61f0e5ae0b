"""Which tests cover which lines: measured once per image, with coverage.py's dynamic contexts.

coverage and pytest-cov live in the base image outside every project's environment and are put on
``PYTHONPATH`` only for this run, so measuring changes nothing a project or an episode sees.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from envs.runtime import Runtime
from images.base import BASE_VERSION, COVERAGE_DIR
from storage.errors import ForagerError

_REPORT = "/tmp/forager-coverage.json"
_RCFILE = "/tmp/forager-coveragerc"
# relative_files: paths in the report are relative to the repository, as test ids are.
_RC = "[run]\nrelative_files = True\n[json]\nshow_contexts = True\n"


class CoverageError(ForagerError):
    """The coverage run produced no report."""


@dataclass(frozen=True)
class Coverage:
    """Per file, per line: the ids of the tests that executed it."""

    lines: dict[str, dict[int, frozenset[str]]]
    seconds: float = 0.0
    """How long the measuring run of the whole suite took."""

    def tests_covering(self, path: str, first: int, last: int) -> frozenset[str]:
        """Tests that executed any line of ``path`` from ``first`` to ``last`` (inclusive)."""
        by_line = self.lines.get(path, {})
        covering: set[str] = set()
        for line in range(first, last + 1):
            covering |= by_line.get(line, frozenset())
        return frozenset(covering)

    def to_json(self) -> dict[str, Any]:
        lines = {
            path: {str(n): sorted(ids) for n, ids in by_line.items()} for path, by_line in self.lines.items()
        }
        return {"seconds": self.seconds, "lines": lines}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Coverage:
        lines = {
            path: {int(n): frozenset(ids) for n, ids in by_line.items()}
            for path, by_line in data["lines"].items()
        }
        return cls(lines, data["seconds"])


def parse_report(report: dict) -> Coverage:
    """Coverage from coverage.py's JSON report with contexts (``pytest-cov --cov-context=test``).

    pytest-cov names contexts ``NODEID|setup``, ``NODEID|run`` and ``NODEID|teardown``; only ``run``
    counts, since fixtures shared by many tests would otherwise tie every test to their lines.
    """
    lines: dict[str, dict[int, frozenset[str]]] = {}
    for path, data in report.get("files", {}).items():
        by_line: dict[int, set[str]] = defaultdict(set)
        for number, contexts in data.get("contexts", {}).items():
            for context in contexts:
                test, _, phase = context.rpartition("|")
                if test and phase == "run":
                    by_line[int(number)].add(test)
        if by_line:
            lines[path] = {n: frozenset(ids) for n, ids in by_line.items()}
    return Coverage(lines)


def measure(runtime: Runtime, test_command: str, timeout: float = 1800) -> Coverage:
    """Run the suite once under coverage in ``runtime`` and return who covers what."""
    if not runtime.exists(f"{COVERAGE_DIR}/pytest_cov"):
        raise CoverageError(
            f"the image has no {COVERAGE_DIR}: it was built on a base image older than version "
            f"{BASE_VERSION}; rebuild it with `forager images build --rebuild SOURCE`"
        )
    runtime.write_file(_RCFILE, _RC.encode())
    command = (
        f"PYTHONPATH={COVERAGE_DIR} COVERAGE_RCFILE={_RCFILE} COVERAGE_FILE=/tmp/.forager-coverage "
        f"{test_command} -p pytest_cov --cov=. "
        f"--cov-context=test --cov-report=json:{_REPORT} -q -rN --color=no"
    )
    started = time.monotonic()
    observation = runtime.run(f"(cd {runtime.workdir} && {command})", timeout=timeout)
    seconds = time.monotonic() - started
    if observation.timed_out:
        raise CoverageError(f"the coverage run took longer than {timeout:.0f} s")
    try:
        report = json.loads(runtime.read_file(_REPORT))
    except FileNotFoundError as exc:
        raise CoverageError(f"the coverage run wrote no report: {observation.output[-500:]}") from exc
    return dataclasses.replace(parse_report(report), seconds=seconds)
