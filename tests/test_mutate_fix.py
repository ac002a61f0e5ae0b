"""Which tests validate a mutant: those that execute the lines it changed (no Docker needed)."""

from __future__ import annotations

import json
import random

from envs.coverage import Coverage
from envs.mutate import Mutant, functions, mutants
from envs.mutate_fix import (
    MIN_VALIDATION_TIMEOUT_S,
    MutateOptions,
    cheapest_first,
    executing_tests,
    file_candidates,
    validation_timeout,
)

SOURCE = """\
import math


def clamp(value, low, high):
    if value < low:
        return low
    if value > high:
        return high
    return value


def total(values,
          start=0):
    result = sum(
        values,
        start * 1,
    )
    return result


def root(x):
    return math.sqrt(x)
"""

LOW, HIGH, INSIDE, TOTAL, ROOT = "t::low", "t::high", "t::inside", "t::total", "t::root"
COVERAGE = Coverage(
    {
        "m.py": {
            5: frozenset({LOW, HIGH, INSIDE}),  # if value < low
            6: frozenset({LOW}),  # return low
            7: frozenset({HIGH, INSIDE}),  # if value > high
            8: frozenset({HIGH}),  # return high
            9: frozenset({INSIDE}),  # return value
            14: frozenset({TOTAL}),  # result = sum(  -- coverage records a statement at its first line
            18: frozenset({TOTAL}),
            22: frozenset({ROOT}),
        }
    }
)
SPANS = {span.qualname: span for span in functions(SOURCE)}


def mutants_of(function: str, operator: str) -> list[Mutant]:
    return mutants(
        "m.py", SOURCE, targets=[function], operators=[operator], rng=random.Random(0), per_function=20
    )


def executing(mutant: Mutant) -> frozenset[str]:
    return executing_tests(COVERAGE, mutant, SPANS[mutant.function])


def test_an_operator_change_is_validated_by_the_executing_tests_its_line_only() -> None:
    by_line = {m.line: executing(m) for m in mutants_of("clamp", "comparison_operator_replaced")}
    assert by_line == {5: {LOW, HIGH, INSIDE}, 7: {HIGH, INSIDE}}


def test_a_removed_return_is_validated_by_the_tests_reaching_it() -> None:
    by_line = {m.line: executing(m) for m in mutants_of("clamp", "return_value_removed")}
    assert by_line == {6: {LOW}, 8: {HIGH}, 9: {INSIDE}}


def test_a_form_feed_does_not_shift_the_lines_looked_up() -> None:
    # Python counts "\x0c" as whitespace, not as a line break (str.splitlines does not agree).
    source = SOURCE.replace("import math\n\n", "import math\n\x0c\n", 1)
    found = mutants(
        "m.py", source, targets=["clamp"], operators=["return_value_removed"], rng=random.Random(0)
    )
    by_line = {m.line: executing_tests(COVERAGE, m, SPANS[m.function]) for m in found}
    assert by_line == {6: {LOW}, 8: {HIGH}, 9: {INSIDE}}


def test_a_change_inside_a_statement_spanning_lines_counts_its_first_line() -> None:
    (swapped,) = mutants_of("total", "call_arguments_swapped")
    assert swapped.line == 15  # `values,` inside the call that starts at line 14
    assert executing(swapped) == {TOTAL}


def test_a_signature_or_import_change_is_validated_by_every_test_of_the_function() -> None:
    removed = mutants_of("total", "parameter_removed")
    assert len(removed) == 2  # `values`, `start=0`: changes to the signature
    assert {executing(m) for m in removed} == {frozenset({TOTAL})}
    (unimported,) = mutants_of("root", "import_removed")
    assert unimported.line == 1 and executing(unimported) == {ROOT}


def test_a_change_no_test_executes_has_no_validating_test() -> None:
    uncovered = Coverage({"m.py": {5: frozenset({LOW}), 6: frozenset({LOW})}})
    by_line = {
        m.line: executing_tests(uncovered, m, SPANS["clamp"])
        for m in mutants_of("clamp", "return_value_removed")
    }
    assert by_line == {6: {LOW}, 8: frozenset(), 9: frozenset()}


def test_validation_timeout_follows_the_suite_so_an_endless_loop_costs_little() -> None:
    assert validation_timeout(Coverage({}, seconds=2.0), limit=600) == MIN_VALIDATION_TIMEOUT_S
    assert validation_timeout(Coverage({}, seconds=100.0), limit=600) == 300
    assert validation_timeout(Coverage({}, seconds=1000.0), limit=600) == 600


def test_coverage_keeps_its_duration_through_json() -> None:
    measured = Coverage(COVERAGE.lines, seconds=12.5)
    assert Coverage.from_json(json.loads(json.dumps(measured.to_json()))) == measured


def test_cheapest_candidates_first_functions_taking_turns() -> None:
    big = frozenset(f"tests/test_big.py::t{n}" for n in range(50))
    small = frozenset({"tests/test_small.py::a", "tests/test_small.py::b"})
    passing = big | small
    clamp = mutants_of("clamp", "return_value_removed")  # three, at lines 6, 8, 9
    total = mutants_of("total", "parameter_removed")  # two
    candidates = [
        (clamp[0], frozenset({"tests/test_big.py::t0"})),  # 1 + 50
        (clamp[1], frozenset({"tests/test_small.py::a"})),  # 1 + 2
        (clamp[2], frozenset({"tests/test_big.py::t1", "tests/test_small.py::b"})),  # 2 + 52
        (total[0], frozenset({"tests/test_small.py::a", "tests/test_small.py::b"})),  # 2 + 2
        (total[1], frozenset({"tests/test_small.py::b"})),  # 1 + 2, a tie with clamp[1]: given order
    ]
    ordered = [mutant for mutant, _ in cheapest_first(candidates, passing)]
    assert ordered == [clamp[1], total[1], clamp[0], total[0], clamp[2]]


PROPERTY = """\
class Box:
    def __init__(self):
        self._size = 0

    @property
    def size(self):
        return self._size + 0

    @size.setter
    def size(self, value):
        self._size = value - 0
"""


def property_candidates(passing: frozenset[str]) -> dict[int, frozenset[str]]:
    coverage = Coverage(
        {"box.py": {3: frozenset({"t::new"}), 7: frozenset({"t::get"}), 11: frozenset({"t::set"})}}
    )
    found = file_candidates(
        "box.py", PROPERTY, coverage, passing, MutateOptions(per_function=20), random.Random(0)
    )
    assert all(mutant.function in ("Box.size", "Box.__init__") for mutant, _ in found)
    return {mutant.line: tests for mutant, tests in found if mutant.function == "Box.size"}


def test_a_property_getter_and_setter_are_told_apart_by_their_lines() -> None:
    by_line = property_candidates(frozenset({"t::new", "t::get", "t::set"}))
    assert by_line.get(7) == {"t::get"} and by_line.get(11) == {"t::set"}


def test_a_setter_whose_test_fails_in_the_baseline_is_no_target_though_its_getter_is() -> None:
    by_line = property_candidates(frozenset({"t::new", "t::get"}))
    assert set(by_line) == {7}
