"""Real builds on the base whose Python a project needs: trixie's 3.13 for ``>=3.12``, made on demand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from images.base import base_for_python
from images.builder import ImageBuilder
from images.sources import parse_source
from storage import ImageStatus
from tests.repos import python_project, write

pytestmark = pytest.mark.docker

TRIXIE = base_for_python("3.13")
assert TRIXIE is not None

#: Code that only Python 3.12 and later run: a ``type`` statement is a syntax error before 3.12, and
#: ``itertools.batched`` is new in 3.12.
NEW_PYTHON_CODE = """\
import itertools

type Pair = tuple[int, int]


def pairs(values: list[int]) -> list[Pair]:
    return [tuple(batch) for batch in itertools.batched(values, 2)]
"""
NEW_PYTHON_TESTS = """\
import sys

from calc.pairs import pairs


def test_pairs():
    assert pairs([1, 2, 3, 4]) == [(1, 2), (3, 4)]


def test_runs_on_the_chosen_python():
    assert sys.version_info[:2] == (3, 13)
"""


def test_a_project_requiring_312_builds_on_trixie_and_its_tests_pass(builder: ImageBuilder, tmp_path):
    files = python_project(tests=NEW_PYTHON_TESTS)
    files["pyproject.toml"] = files["pyproject.toml"].replace('">=3.8"', '">=3.12"')
    files["src/calc/pairs.py"] = NEW_PYTHON_CODE
    write(tmp_path / "proj", files)
    # The first build on a fresh engine makes the trixie base too (minutes): not part of the budget.
    builder.options = replace(builder.options, timeout=1800)

    result = builder.build(parse_source(str(tmp_path / "proj")))

    assert result.status == ImageStatus.READY, result.reason
    assert (result.tests_passed, result.tests_total) == (2, 2)
    record = builder.store.get_image(result.tag)
    assert (record.base_image, record.recipe["python"]) == (TRIXIE.tag, "3.13")
    artifacts = tmp_path / "home" / "images" / result.tag.removeprefix("forager/").replace(":", "/")
    assert (
        "\n# CPython 3.13, the base's own python3\nFROM forager/base:trixie\n"
        in (artifacts / "Dockerfile").read_text()
    )
    assert "Python 3.13 (forager/base:trixie): Requires-Python >=3.12" in Path(record.log_path).read_text()
    version = builder.client.containers.run(
        TRIXIE.tag, ["python3", "-c", "import platform; print(platform.python_version())"],
        remove=True, network_mode="none",
    )  # fmt: skip
    assert version.decode().strip() == TRIXIE.python_version, "BASES names the version trixie ships"


def test_a_python_no_base_gives_fails_as_unsupported_python(builder: ImageBuilder, tmp_path):
    files = python_project()
    files["pyproject.toml"] = files["pyproject.toml"].replace('">=3.8"', '">=3.6,<3.9"')
    write(tmp_path / "old", files)

    result = builder.build(parse_source(str(tmp_path / "old")))

    assert (result.status, result.failure_class) == (ImageStatus.FAILED, "unsupported_python")
    assert result.reason.startswith("the project requires Python >=3.6,<3.9 and Forager's bases give Python")
    (record,) = builder.store.list_images()
    assert record.failure_class == "unsupported_python" and result.reason in record.log_tail


def test_a_failed_build_is_recorded_on_the_base_it_failed_on(builder: ImageBuilder, tmp_path):
    files = python_project(dependencies='"forager-no-such-distribution-x9"')
    files["pyproject.toml"] = files["pyproject.toml"].replace('">=3.8"', '">=3.12"')
    write(tmp_path / "missing", files)
    builder.options = replace(builder.options, timeout=1800)  # the first build makes trixie's base

    result = builder.build(parse_source(str(tmp_path / "missing")))

    assert (result.status, result.failure_class) == (ImageStatus.FAILED, "install_failed"), result.reason
    (record,) = builder.store.list_images()
    assert record.base_image == TRIXIE.tag


#: Code of an old release line: ``collections.Mapping`` went in 3.10.
OLD_PYTHON_CODE = """\
from collections import Mapping


def keys(mapping: Mapping) -> list:
    return sorted(mapping)
"""
OLD_PYTHON_TESTS = """\
import sys

from calc.old import keys


def test_keys():
    assert keys({"b": 1, "a": 2}) == ["a", "b"]


def test_runs_on_the_chosen_python():
    assert sys.version_info[:2] == (3, 9)
"""


def test_an_old_commit_tested_up_to_38_builds_on_bullseye(builder: ImageBuilder, tmp_path):
    files = python_project(tests=OLD_PYTHON_TESTS)
    classifiers = "".join(f'"Programming Language :: Python :: 3.{m}", ' for m in (6, 7, 8))
    files["pyproject.toml"] = files["pyproject.toml"].replace(
        'requires-python = ">=3.8"', f'requires-python = ">=3.6"\nclassifiers = [{classifiers}]'
    )
    assert "3.8" in files["pyproject.toml"]
    files["src/calc/old.py"] = OLD_PYTHON_CODE
    write(tmp_path / "old", files)
    builder.options = replace(builder.options, timeout=1800)  # the first build makes bullseye's base

    result = builder.build(parse_source(str(tmp_path / "old")))

    assert result.status == ImageStatus.READY, result.reason
    assert (result.tests_passed, result.tests_total) == (2, 2)
    record = builder.store.get_image(result.tag)
    assert (record.base_image, record.recipe["python"]) == ("forager/base:bullseye", "3.9")
