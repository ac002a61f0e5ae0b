"""Which ready images a commit's layer may sit on."""

from __future__ import annotations

import pytest

from images.layers import installs_editable
from storage import Image


@pytest.mark.parametrize(
    ("runs", "editable"),
    [
        (["uv pip install -e '.[test]'"], True),
        (["uv pip install pytest", "uv pip install --editable ."], True),
        (["uv pip install --no-deps -e ."], True),
        # The no_editable repair installed the project as a copy: a layer's checkout would be bypassed.
        (["uv pip install '.[test]'"], False),
        (["uv pip install pytest-env"], False),
        ([], False),
    ],
)
def test_only_an_image_that_installed_the_project_editable_can_be_a_layers_base(runs, editable) -> None:
    image = Image(recipe={"steps": [{"run": run, "why": "x"} for run in runs]})
    assert installs_editable(image) is editable
