"""Decisions of the install-and-repair loop that no real build here can provoke."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from images.build_log import BuildLog
from images.build_result import BuildOptions
from images.detect import detect
from images.install_loop import (
    collect,
    from_checkout,
    installs_the_checkout,
    keep_project_installed,
    run_steps,
)
from images.recipe import RecipeStep
from images.sources import Checkout, parse_source
from tests.repos import python_project, write

NEWEST = "env -u UV_EXCLUDE_NEWER uv pip install twisted"


class Scripted:
    """Stands in for the build container: each command's exit code and output, as uv and pytest gave them
    in real builds of old commits on Python 3.9 (jsonschema's tests import twisted, whose every release
    of that date is an sdist uv refuses; black's lock pins typed-ast 1.4.0, which does not compile for
    3.9). No index this suite can serve reproduces them."""

    def __init__(self, log: BuildLog, replies: dict[str, list[tuple[int, str]]]) -> None:
        self.log, self.replies = log, replies
        self.env = {"UV_EXCLUDE_NEWER": "2020-08-21T00:00:00Z"}
        self.commands: list[str] = []

    def __call__(self, title: str, command: str, env: dict[str, str]) -> int:
        self.commands.append(command)
        code, output = self.replies[command].pop(0)
        self.log.section(f"{title}\n$ {command}", output)
        return code


def test_a_module_collection_needs_is_installed_newest_when_its_dated_releases_cannot_be(tmp_path: Path):
    root = write(tmp_path / "proj", python_project())
    checkout = Checkout(parse_source(str(root)), root, "c" * 40)
    collect_only = "python -m pytest -p no:cacheprovider tests --collect-only -q"
    run = Scripted(
        BuildLog(tmp_path / "build.log"),
        {
            collect_only: [
                (2, "E   ModuleNotFoundError: No module named 'twisted'\n1 error in 0.1s"),
                (0, "tests/test_calc.py::test_add\n1 test collected in 0.1s"),
            ],
            "uv pip install twisted": [
                (1, "error: No solution found when resolving dependencies\n  cause: Because all versions of "
                 "twisted have a non-PEP 625-compliant source distribution filename"),
            ],
            NEWEST: [(0, "Installed 1 package\n + twisted==25.5.0")],
        },
    )  # fmt: skip

    tests = "python -m pytest -p no:cacheprovider tests"
    steps, command = collect(run, [], tests, checkout, detect(root), BuildOptions())

    assert command == tests
    assert run.commands == [collect_only, "uv pip install twisted", NEWEST, collect_only]
    assert [step.run for step in steps] == [NEWEST], "the recipe keeps the install that worked"


def test_a_locked_version_that_does_not_build_frees_the_lock_before_dropping_extras(tmp_path: Path):
    files = python_project()
    files["Pipfile.lock"] = json.dumps(
        {"default": {"typed-ast": {"version": "==1.4.0"}, "click": {"version": "==7.1.2"}}, "develop": {}}
    )
    root = write(tmp_path / "locked", files)
    plan = detect(root)
    assert "typed-ast==1.4.0" in plan.pins
    project = RecipeStep("uv pip install -e '.[test]'", "the project, editable, with extras test")
    freed = "env -u UV_CONSTRAINT uv pip install -e '.[test]'"
    failed = "error: Failed to build `typed-ast==1.4.0`\n  ast3/Python/ast.c:4534:24: error: too many args"
    run = Scripted(
        BuildLog(tmp_path / "build.log"),
        {project.run: [(1, failed)], freed: [(0, "Installed 10 packages\n + typed-ast==1.4.1")]},
    )
    run.env["UV_CONSTRAINT"] = "/opt/forager/constraints.txt"

    done = run_steps(run, [project], plan, None, repair_rounds=8)

    assert run.commands == [project.run, freed], "the extras stay; the lock's pin goes"
    assert [step.run for step in done] == [freed]


def test_a_requirements_file_installing_the_project_editable_gets_the_switch_the_project_got(tmp_path: Path):
    """yarl's 2020 requirements/ci.txt holds "-e .": editable builds fail there as for the project."""
    root = write(tmp_path / "proj", python_project())
    editable_failed = (
        1,
        "   Building file:///repo\nerror: The build backend returned an error\n  cause: Call to "
        "`setuptools.build_meta:__legacy__.build_editable` failed (exit status: 1)\n"
        "AttributeError: '_BuildMetaLegacyBackend' object has no attribute 'build_editable'",
    )
    project = RecipeStep("uv pip install -e .", "the project, editable")
    ci = RecipeStep("uv pip install -r requirements/ci.txt", "requirements file ci.txt", required=False)
    plain_ci = (
        "rm -rf requirements.forager-not-editable && cp -r requirements requirements.forager-not-editable"
        " && find requirements.forager-not-editable -type f -exec sed -E -i"
        " 's/^[[:space:]]*(-e|--editable)([[:space:]]+|=)//' {} + && uv pip install -r"
        " requirements.forager-not-editable/ci.txt; status=$?; rm -rf requirements.forager-not-editable;"
        " exit $status"
    )
    run = Scripted(
        BuildLog(tmp_path / "build.log"),
        {
            project.run: [editable_failed],
            "uv pip install .": [(0, "Installed 1 package")],
            ci.run: [editable_failed],
            plain_ci: [(0, "Installed 3 packages")],
        },
    )

    done = run_steps(run, [project, ci], detect(root), None, repair_rounds=8)

    assert run.commands == [project.run, "uv pip install .", ci.run, plain_ci]
    assert [step.run for step in done] == ["uv pip install .", plain_ci]


def test_a_release_installed_over_the_project_makes_its_step_run_again(tmp_path: Path) -> None:
    # click's pip-compiled requirements/dev.txt pins click==7.1.2 for pip-tools; the project step was
    # made a copy by the no_editable repair (setuptools of the commit's date cannot install editable).
    steps = [
        RecipeStep("python3 -m venv /venv", "venv"),
        RecipeStep("uv pip install '.[test]'", "the project (repair: no_editable)", {"A": "1"}),
        RecipeStep("uv pip install -r requirements/dev.txt", "requirements", required=False),
    ]
    check = f'test -n "$({from_checkout()})"'
    again = "uv pip install --no-deps '.[test]'"
    run = Scripted(BuildLog(tmp_path / "build.log"), {check: [(1, "")], again: [(0, "+ click==8.0.0.dev0")]})
    kept = keep_project_installed(run, steps)
    assert run.commands == [check, again]
    assert kept[:3] == steps and (kept[3].run, kept[3].env) == (again, {"A": "1"})
    # Still installed from the checkout: nothing runs again.
    run = Scripted(BuildLog(tmp_path / "build2.log"), {check: [(0, "click\n")]})
    assert keep_project_installed(run, steps) == steps
    # An editable project step must still be editable: a copy of the checkout is not enough.
    editable = [steps[0], RecipeStep("uv pip install -e '.[test]'", "the project, editable"), steps[2]]
    check = f'test -n "$({from_checkout(editable=True)})"'
    again = "uv pip install --no-deps -e '.[test]'"
    run = Scripted(BuildLog(tmp_path / "build3.log"), {check: [(1, "")], again: [(0, "")]})
    assert keep_project_installed(run, editable)[-1].run == again


def test_the_checkout_scripts_find_what_the_venv_has_from_the_checkout(tmp_path: Path) -> None:
    # The scripts run in the image's venv; here, in a venv made for the test, with the paths moved.
    venv, repo = tmp_path / "venv", tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    for name, editable in (("calc", True), ("copied", False), ("other", False)):
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        url = {"url": f"file://{repo}" if name != "other" else "file:///elsewhere"}
        url |= {"dir_info": {"editable": editable}}
        (info / "direct_url.json").write_text(json.dumps(url))

    def names(script: str) -> list[str]:
        script = script.replace("/venv/bin/python", str(venv / "bin/python")).replace(
            "file:///repo", f"file://{repo}"
        )
        done = subprocess.run(["sh", "-c", f'echo "$({script})"'], capture_output=True, text=True, check=True)
        return sorted(done.stdout.split())

    assert names(from_checkout()) == ["calc", "copied"]
    assert names(from_checkout(editable=True)) == ["calc"]


def test_which_steps_install_the_checkout() -> None:
    assert installs_the_checkout("uv pip install -e '.[test,docs]'")
    assert installs_the_checkout("uv pip install .")
    assert installs_the_checkout("env -u UV_EXCLUDE_NEWER uv pip install --no-build-isolation -e .")
    assert not installs_the_checkout("uv pip install -r requirements.txt")
    assert not installs_the_checkout("uv pip install ./released pytest")
    assert not installs_the_checkout("python3 -m venv /venv")
