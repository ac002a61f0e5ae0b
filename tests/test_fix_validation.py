"""Validating a mined fix: what it refuses before touching an environment."""

from __future__ import annotations

import pytest

from envs.candidates import Candidate
from envs.fix_validation import validate
from images.baseline import Baseline


@pytest.mark.parametrize(
    "command", ["python tests/runtests.py --verbosity=2", "python -m unittest discover -v -s tests -t ."]
)
def test_an_image_whose_tests_are_not_run_by_pytest_is_refused_with_that_reason(command: str) -> None:
    candidate = Candidate("a" * 40, "b" * 40, "Fix it", "Fix it", "gold", "test", ("tests/test_x.py",))
    # No environment is needed to know it: the touched test modules would run as pytest files.
    reason = validate(None, command, Baseline.from_json({"outcomes": {}}), candidate, timeout=60)  # type: ignore[arg-type]
    assert reason == (
        "mining runs the touched test files with pytest, and this image's tests run with "
        + ("script" if "runtests" in command else "unittest")
    )
