"""Per-test durations and partial baselines: stored with the image (migration 0006, SQLite and PostgreSQL),
ordering mutate-fix validation by what its tests cost, and shown by ``forager images show``."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from envs.mutate_fix import cheapest_first
from storage import Image, ImageStatus, Store
from storage.migrations import alembic_config
from tests import test_storage
from tests.cli import forager
from tests.test_mutate_fix import mutants_of
from tests.test_storage import _image, _schema_diff

db_url = test_storage.db_url
store = test_storage.store

BIG = frozenset(f"tests/test_big.py::t{n}" for n in range(50))
SMALL = frozenset({"tests/test_small.py::a", "tests/test_small.py::b"})
PASSING = BIG | SMALL
CLAMP = mutants_of("clamp", "return_value_removed")  # three
#: One candidate per function whose tests sit in the big file, one whose tests sit in the small file.
CANDIDATES = [
    (CLAMP[0], frozenset({"tests/test_big.py::t0"})),  # 1 + 50 executions
    (CLAMP[1], frozenset({"tests/test_small.py::a"})),  # 1 + 2 executions
]


def _order(durations: dict[str, float] | None) -> list[str]:
    return [mutant.description for mutant, _ in cheapest_first(CANDIDATES, PASSING, durations)]


# ---- validation order ----------------------------------------------------------------------------------


def test_without_durations_the_fewest_test_executions_go_first() -> None:
    by_executions = [CLAMP[1].description, CLAMP[0].description]
    assert _order(None) == _order({}) == by_executions
    # Durations of tests that cannot run (not stable passing) say nothing about these candidates.
    assert _order({"tests/test_gone.py::x": 30.0}) == by_executions


def test_measured_durations_put_the_fast_big_file_before_the_slow_small_one() -> None:
    durations = {test: 0.01 for test in BIG} | {"tests/test_small.py::a": 4.0, "tests/test_small.py::b": 3.0}
    # The big file's candidate runs 51 tests for 0.51 s; the small file's runs 3 for 11 s.
    assert _order(durations) == [CLAMP[0].description, CLAMP[1].description]


def test_an_unmeasured_test_costs_the_median_of_the_measured_ones() -> None:
    # Only the small file measured, at 2 s a test: the big file's 50 unmeasured tests cost 2 s each, so
    # its candidate (102 s) goes after the small file's (6 s), not first as if unmeasured were free.
    assert _order({"tests/test_small.py::a": 2.0, "tests/test_small.py::b": 2.0}) == [
        CLAMP[1].description,
        CLAMP[0].description,
    ]
    # All measured but the big file's candidate's own test: it costs the median, 0.01 s, not forever,
    # so that candidate (0.51 s) still goes before the small file's slow tests (30 s).
    durations = {test: 0.01 for test in BIG - {"tests/test_big.py::t0"}}
    durations |= {"tests/test_small.py::a": 10.0, "tests/test_small.py::b": 10.0}
    assert _order(durations) == [CLAMP[0].description, CLAMP[1].description]


def test_functions_still_take_turns_when_ordered_by_seconds() -> None:
    total = mutants_of("total", "parameter_removed")
    candidates = [
        (CLAMP[0], frozenset({"tests/test_small.py::a"})),  # 0.01 + 0.03 s
        (CLAMP[1], frozenset({"tests/test_small.py::b"})),  # 0.02 + 0.03 s
        (total[0], frozenset({"tests/test_big.py::t0"})),  # 1 + 50 s
    ]
    durations = {test: 1.0 for test in BIG} | {"tests/test_small.py::a": 0.01, "tests/test_small.py::b": 0.02}
    ordered = [mutant for mutant, _ in cheapest_first(candidates, PASSING, durations)]
    # clamp's second candidate is cheaper than total's first, but waits for total's turn.
    assert ordered == [CLAMP[0], total[0], CLAMP[1]]


# ---- the store ------------------------------------------------------------------------------------------


def test_an_image_keeps_its_durations_and_partial_flag(store: Store) -> None:
    durations = {"tests/test_a.py::test_ü[1.5]": 0.125, "tests/test_a.py::b": 12.0}
    _image(store, tag="forager/big:1", baseline={"tests/test_a.py::b": "passed"}, durations=durations,
           partial=True)  # fmt: skip
    _image(store, tag="forager/small:1", name="small")
    big, small = store.get_image("forager/big:1"), store.get_image("forager/small:1")
    assert big is not None and small is not None
    assert (big.durations, big.partial) == (durations, True)
    assert (small.durations, small.partial) == (None, False)


def test_migration_0006_keeps_stored_images_and_downgrades(db_url: str) -> None:
    with Store(db_url) as store:
        _image(store, tag="forager/old:1", baseline={"t.py::a": "passed"}, flaky=["t.py::a"])
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0005")
        columns = {column["name"] for column in sa.inspect(connection).get_columns("images")}
    assert not {"durations", "partial"} & columns
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0006")
        row = connection.execute(sa.text("SELECT tag, durations, partial FROM images")).one()
    engine.dispose()
    # An image built before durations were recorded: durations unknown, baseline whole.
    assert (row.tag, row.durations, bool(row.partial)) == ("forager/old:1", None, False)
    with Store(db_url, upgrade=True) as store:
        assert _schema_diff(store) == []
        old = store.get_image("forager/old:1")
        assert old is not None and old.baseline == {"t.py::a": "passed"} and old.flaky == ["t.py::a"]
        assert (old.durations, old.partial) == (None, False)
        store.save_image(Image(tag="forager/old:1", durations={"t.py::a": 1.5}, partial=True))
        updated = store.get_image("forager/old:1")
        assert updated is not None and (updated.durations, updated.partial) == ({"t.py::a": 1.5}, True)


# ---- forager images show --------------------------------------------------------------------------------


def _shown(tmp_path: Path, *args: str) -> str:
    done = forager("images", "show", "forager/suite:1", *args, home=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_images_show_says_a_baseline_is_partial_and_names_the_slowest_tests(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'forager.db'}", upgrade=True)
    repository = store.get_or_create_repository("./suite", "suite", "c" * 40)
    baseline = {f"tests/test_{f}.py::t{n}": "passed" for f in "abc" for n in range(3)}
    durations = {test: 0.01 for test in baseline} | {
        "tests/test_b.py::t1": 41.5,
        "tests/test_c.py::t0": 7.25,
        "tests/test_a.py::t2": 3.0,
    }
    store.save_image(
        Image(
            repository_id=repository.id, tag="forager/suite:1", status=ImageStatus.READY, base_image="base",
            recipe={}, recipe_hash="", test_command="pytest", baseline=baseline, durations=durations,
            partial=True,
        )
    )  # fmt: skip
    store.close()
    lines = _shown(tmp_path).splitlines()
    assert (
        "partial    the baseline has the tests of 3 test file(s) of the suite: its runs stopped "
        "before the rest (the time budget, or an internal error of pytest; see the build log)"
    ) in lines
    assert (
        "slowest    tests/test_b.py::t1 41.50 s, tests/test_c.py::t0 7.25 s, tests/test_a.py::t2 3.00 s"
        in lines
    )
    shown = json.loads(_shown(tmp_path, "--json"))
    assert shown["partial"] is True and shown["durations"] == durations


def test_images_show_of_a_whole_unmeasured_baseline_has_neither_line(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'forager.db'}", upgrade=True)
    repository = store.get_or_create_repository("./suite", "suite", "c" * 40)
    store.save_image(
        Image(
            repository_id=repository.id, tag="forager/suite:1", status=ImageStatus.READY, base_image="base",
            recipe={}, recipe_hash="", test_command="pytest", baseline={"t.py::a": "passed"},
        )
    )  # fmt: skip
    store.close()
    text = _shown(tmp_path)
    assert "baseline   1 passed" in text and "partial" not in text and "slowest" not in text
    shown = json.loads(_shown(tmp_path, "--json"))
    assert shown["partial"] is False and shown["durations"] is None
