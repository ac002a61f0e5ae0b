"""A real build records its baseline's per-test durations and partial flag in the store, where validation
and ``forager images show`` read them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from images.builder import ImageBuilder
from images.sources import parse_source
from storage import ImageStatus
from tests.repos import write
from tests.test_runners_docker import PLAIN_PYPROJECT

pytestmark = pytest.mark.docker

FILES = 16
TEST_FILE = "import time\n\n\ndef test_slow():\n    time.sleep(1)\n\n\ndef test_fast():\n    pass\n"


def test_a_build_stores_the_durations_and_partial_flag_of_its_baseline(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    # 16 files of one 1 s test and one instant test, serially, against a 16 s limit whose last quarter
    # only finishes the files already started: the baseline covers some of the files, not all.
    builder.options = replace(builder.options, test_timeout=16, per_test_timeout=10)
    extra = '[project.optional-dependencies]\ntest = ["pytest"]\n'
    files = {f"tests/test_part{n}.py": TEST_FILE for n in range(FILES)}
    root = write(
        tmp_path / "slow",
        {"pyproject.toml": PLAIN_PYPROJECT.format(name="slow", extra=extra), "slow.py": "", **files},
    )
    result = builder.build(parse_source(str(root)))
    assert result.status == ImageStatus.READY, result.reason
    record = builder.store.get_image(result.tag)
    assert record is not None and record.partial is True
    completed = {test.split("::")[0] for test in record.baseline}
    assert 0 < len(completed) < FILES, completed
    assert record.durations is not None and set(record.durations) == set(record.baseline)
    slow = {test: s for test, s in record.durations.items() if test.endswith("::test_slow")}
    fast = {test: s for test, s in record.durations.items() if test.endswith("::test_fast")}
    assert len(slow) == len(fast) == len(completed)
    assert all(0.9 < seconds < 10 for seconds in slow.values()), slow
    assert all(seconds < 0.5 for seconds in fast.values()), fast
