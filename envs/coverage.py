"""Which tests cover which lines: measured once per image, with coverage.py's dynamic contexts.

coverage and pytest-cov live in the base image outside every project's environment and are put on
``PYTHONPATH`` only for this run, so measuring changes nothing a project or an episode sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ForagerError
from envs.runtime import Runtime
from images.base import BASE_VERSION, COVERAGE_DIR

_DATA_FILE = "/tmp/.forager-coverage"
_RCFILE = "/tmp/forager-coveragerc"
# relative_files: paths in the data are relative to the repository, as test ids are.
_RC = "[run]\nrelative_files = True\n"


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
        """A JSON-ready dict; test ids are listed once and named by their index, since a suite's
        coverage names each test once per line it executed (millions of times for packaging's)."""
        tests = sorted({test for by_line in self.lines.values() for ids in by_line.values() for test in ids})
        index = {test: number for number, test in enumerate(tests)}
        lines = {
            path: {str(n): sorted(index[test] for test in ids) for n, ids in by_line.items()}
            for path, by_line in self.lines.items()
        }
        return {"seconds": self.seconds, "tests": tests, "lines": lines}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Coverage:
        tests: list[str] = data["tests"]
        # Lines of one branch run in the same tests: one set serves them all.
        shared: dict[tuple[int, ...], frozenset[str]] = {}

        def ids(numbers: list[int]) -> frozenset[str]:
            key = tuple(numbers)
            if key not in shared:
                shared[key] = frozenset(tests[number] for number in numbers)
            return shared[key]

        lines = {
            path: {int(n): ids(numbers) for n, numbers in by_line.items()}
            for path, by_line in data["lines"].items()
        }
        return cls(lines, data["seconds"])


def read_data_file(path: Path) -> Coverage:
    """Coverage from coverage.py's SQLite data file, measured with ``pytest-cov --cov-context=test``.

    pytest-cov names contexts ``NODEID|setup``, ``NODEID|run`` and ``NODEID|teardown``; only ``run``
    counts, since fixtures shared by many tests would otherwise tie every test to their lines. The
    data file is read directly rather than through ``coverage json``: that report holds every test id
    once per line it ran, and for a suite of 60,000 tests it takes gigabytes to write.
    """
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
            tests = {
                context_id: context.rpartition("|")[0]
                for context_id, context in database.execute("SELECT id, context FROM context")
                if context.endswith("|run")
            }
            by_file: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
            rows = database.execute(
                "SELECT file.path, line_bits.context_id, line_bits.numbits "
                "FROM line_bits JOIN file ON file.id = line_bits.file_id"
            )
            for file, context_id, numbits in rows:
                if (test := tests.get(context_id)) is not None:
                    by_line = by_file[file]
                    for line in _numbits_to_lines(numbits):
                        by_line[line].add(test)
    except sqlite3.DatabaseError as exc:
        raise CoverageError(f"the coverage data file cannot be read ({exc})") from exc
    return Coverage(
        {file: {n: frozenset(ids) for n, ids in lines.items()} for file, lines in by_file.items()}
    )


def _numbits_to_lines(numbits: bytes) -> list[int]:
    """coverage.py's line set encoding: bit ``b`` of byte ``i`` set means line ``8 * i + b`` ran."""
    return [
        8 * index + bit for index, byte in enumerate(numbits) if byte for bit in range(8) if byte >> bit & 1
    ]


def measure(runtime: Runtime, test_command: str, timeout: float = 1800) -> Coverage:
    """Run the suite once under coverage in ``runtime`` and return who covers what."""
    if not runtime.exists(f"{COVERAGE_DIR}/pytest_cov"):
        raise CoverageError(
            f"the image has no {COVERAGE_DIR}: it was built on a base image older than version "
            f"{BASE_VERSION}; rebuild it with `forager images build --rebuild SOURCE`"
        )
    runtime.write_file(_RCFILE, _RC.encode())
    command = (
        f"PYTHONPATH={COVERAGE_DIR} COVERAGE_RCFILE={_RCFILE} COVERAGE_FILE={_DATA_FILE} "
        f"{test_command} -p pytest_cov --cov=. --cov-context=test --cov-report= -q -rN --color=no"
    )
    started = time.monotonic()
    observation = runtime.run(f"(cd {runtime.workdir} && {command})", timeout=timeout)
    seconds = time.monotonic() - started
    if observation.timed_out:
        raise CoverageError(f"the coverage run took longer than {timeout:.0f} s")
    if observation.exit_code == 137:
        raise CoverageError(
            "the coverage run was killed (exit code 137), most likely for running out of memory: "
            "give the environment more (envs.docker_runtime.Limits.memory)"
        )
    try:
        data = runtime.read_file(_DATA_FILE)
    except FileNotFoundError as exc:
        raise CoverageError(f"the coverage run wrote no data: {observation.output[-500:]}") from exc
    with tempfile.TemporaryDirectory(prefix="forager-coverage-") as folder:
        path = Path(folder) / "coverage.sqlite"
        path.write_bytes(data)
        return dataclasses.replace(read_data_file(path), seconds=seconds)
