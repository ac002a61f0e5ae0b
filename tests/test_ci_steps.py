"""CI set-up replay: which workflow commands become recipe steps, in which phase, and which never do."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.build_setup import add_setup_steps
from images.readers.ci_steps import read_setup
from images.recipe import InstallRecipe, RecipeStep
from tests.repos import write

MAKEFILE = """\
.PHONY: cython test docs fetch
cython: clean-c
\t@cython -3 src/fast/_speed.pyx
clean-c:
\trm -f src/fast/*.c
fetch:
\tcurl -sSL https://example.invalid/data.tar.gz | tar xz
deps:
\tpip install -r requirements.txt
test:
\tpytest
"""


def workflow(steps: str, *, runs_on: str = "ubuntu-latest", extra_jobs: str = "") -> str:
    return (
        "name: tests\non: [push]\njobs:\n" + extra_jobs + f"  test:\n    runs-on: {runs_on}\n    steps:\n"
        "      - uses: actions/checkout@v4\n" + steps
    )


def project(tmp_path: Path, steps: str, **options: str) -> Path:
    return write(
        tmp_path,
        {".github/workflows/tests.yml": workflow(steps, **options), "Makefile": MAKEFILE, "setup.py": ""},
    )


def runs(steps: list[RecipeStep]) -> list[str]:
    return [step.run for step in steps]


def test_the_cython_target_runs_before_the_install_with_what_the_job_installed_for_it(tmp_path):
    root = project(
        tmp_path,
        "      - name: Build\n"
        "        run: |\n"
        "          python -m pip install -U pip setuptools wheel\n"
        '          pip install "cython>=3"\n'
        "          make cython\n"
        "      - run: pip install -e .[test]\n"
        "      - run: python setup.py build_ext --inplace\n"
        "      - run: pytest -x\n"
        "      - run: make cython-again\n",
    )
    setup = read_setup(root)
    assert runs(setup.before) == ["uv pip install 'cython>=3'", "make cython"]
    assert setup.before[1].why == "CI set-up: .github/workflows/tests.yml job test, step Build"
    assert not setup.before[1].required
    # After the job's install of the project: a setup.py command, with setuptools for newer Pythons.
    assert runs(setup.after) == ["uv pip install setuptools", "python setup.py build_ext --inplace"]


def test_cython_is_added_when_the_job_did_not_install_it(tmp_path):
    setup = read_setup(project(tmp_path, "      - run: make cython && pip install .\n      - run: tox\n"))
    assert runs(setup.before) == ["uv pip install Cython", "make cython"]


@pytest.mark.parametrize(
    "command",
    [
        "curl -sSL https://sh.rustup.rs | sh -s -- -y",
        "wget https://example.invalid/x.tar.gz",
        "docker build -t x .",
        "git submodule update --init",
        "git push origin HEAD",
        "twine upload dist/*",
        "codecov -t abc",
        "echo ${{ secrets.TOKEN }} > token && make cython",
        "cat requirements.txt | xargs -n1 pip install",
        "make fetch",
        "make deps",
        "make docs",
        "make -C nowhere cython",
        "make -C ../outside cython",
        "pip list",
        "python --version",
    ],
)
def test_unsafe_or_irrelevant_commands_are_never_replayed(tmp_path, command: str):
    setup = read_setup(project(tmp_path, f"      - run: {command}\n      - run: pytest\n"))
    replayed = runs(setup.before + setup.after)
    assert not any(command.split()[0] in run for run in replayed), replayed


@pytest.mark.parametrize(
    ("command", "makefile"),
    [
        ("cython x.pyx & curl http://example.invalid/x -o /tmp/x", ""),
        ("cython $(curl -s http://example.invalid/y) x.pyx", ""),
        ('cython "$(wget -qO- example.invalid)" x.pyx', ""),
        ("cython `id` x.pyx", ""),
        ("cython x.pyx > /etc/profile", ""),
        ("CYTHON='curl http://example.invalid' make cython", ""),
        ("make -f evil.mk cython", "cython:\n\tcurl http://example.invalid\n"),
        ("make cython CYTHON='sh -c id'", ""),
        ("make cython", "cython:\n\tcython $$(curl example.invalid) x.pyx\n"),
        ("make cython", "cython:\n\t$(MAKE) -C sub cython\n"),
        ("make cython", "cython:\n\tmake -C sub\n"),
        ("make cython", "cython:\n\tcython $(shell curl example.invalid) x.pyx\n"),
    ],
)
def test_commands_the_filter_cannot_read_as_written_are_never_replayed(tmp_path, command: str, makefile: str):
    steps = f"      - run: {command}\n      - run: pytest\n"
    if makefile:
        (tmp_path / "evil.mk").write_text(makefile)
    root = project(tmp_path, steps)
    if makefile and "-f" not in command:
        (root / "Makefile").write_text(makefile)
    setup = read_setup(root)
    assert runs(setup.before + setup.after) == []
    assert any("not replayed" in note for note in setup.notes)


def test_a_step_with_an_empty_shell_is_read_as_bash(tmp_path):
    steps = '      - shell: ""\n        run: make cython\n      - run: pytest\n'
    setup = read_setup(project(tmp_path, steps))
    assert runs(setup.before) == ["uv pip install Cython", "make cython"]


def test_safe_build_commands_are_replayed(tmp_path):
    steps = (
        "      - run: sudo apt-get update && sudo apt-get install -y --no-install-recommends"
        " libyaml-dev libmysqlclient-dev xvfb\n"
        "      - run: cython src/fast/_speed.pyx\n"
        "      - run: python -m cython src/fast/_other.pyx\n"
        "      - working-directory: js\n"
        "        run: npm ci && npm run build && npm test\n"
        "      - run: pip install .\n"
        "      - run: python -m pytest\n"
    )
    setup = read_setup(project(tmp_path, steps))
    # Ubuntu's name, as workflows write it, becomes Debian's.
    assert setup.apt_packages == ["libyaml-dev", "default-libmysqlclient-dev"]
    assert any("xvfb not installed" in note for note in setup.notes)
    assert runs(setup.before) == [
        "uv pip install Cython",
        "cython src/fast/_speed.pyx",
        "uv pip install Cython",
        "python -m cython src/fast/_other.pyx",
        "cd js && npm ci && npm run build",
    ]
    assert setup.needs_node and setup.after == []
    # npm after the project's install serves the JavaScript side, not the Python build.
    late_steps = "      - run: pip install -e .\n      - run: npm ci\n      - run: pytest\n"
    late = read_setup(project(tmp_path / "late", late_steps))
    assert late.after == [] and not late.needs_node


def test_the_test_job_on_linux_is_chosen_and_other_systems_steps_are_skipped(tmp_path):
    lint = "  lint:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make cython\n      - run: ruff .\n"
    windows = (
        "  test-windows:\n    runs-on: windows-latest\n    steps:\n      - run: make cython\n"
        "      - run: pytest\n"
    )
    steps = (
        "      - if: runner.os == 'Windows'\n        run: choco install foo && make cython\n"
        "      - shell: pwsh\n        run: make cython\n"
        "      - env:\n          CFLAGS: -O0\n          TOKEN: ${{ secrets.TOKEN }}\n"
        "        run: make cython\n"
        "      - run: pytest\n"
    )
    setup = read_setup(project(tmp_path, steps, extra_jobs=lint + windows))
    replayed = [(s.run, s.env) for s in setup.before]
    assert replayed == [("uv pip install Cython", {}), ("make cython", {"CFLAGS": "-O0"})]
    assert any("environment variables left out (workflow expressions" in note for note in setup.notes)


def test_no_workflow_malformed_yaml_and_jobs_without_tests(tmp_path):
    assert read_setup(write(tmp_path / "none", {"setup.py": ""})).before == []
    bad = read_setup(write(tmp_path / "bad", {".github/workflows/ci.yml": "jobs: [unclosed\n"}))
    assert bad.before == [] and "not valid YAML" in bad.notes[0]
    testless = write(
        tmp_path / "testless",
        {".github/workflows/build.yml": "jobs:\n  build:\n    steps:\n      - run: make cython\n",
         "Makefile": MAKEFILE},
    )  # fmt: skip
    assert read_setup(testless).before == []


def base_recipe(*steps: RecipeStep) -> InstallRecipe:
    return InstallRecipe("forager/base:bookworm", steps, "python -m pytest")


VENV = RecipeStep("python3 -m venv /venv", "venv")
CONSTRAINTS = RecipeStep("mkdir -p /opt/forager && printf ...", "lock")
PROJECT = RecipeStep("uv pip install -e '.[test]'", "the project, editable")


def test_setup_steps_go_before_the_first_install_and_after_the_last(tmp_path):
    root = project(
        tmp_path,
        "      - run: sudo apt install -y libffi-dev\n      - run: make cython\n"
        "      - run: pip install -e .\n"
        "      - run: python setup.py build_ext -i\n      - run: pytest\n",
    )
    recipe, notes = add_setup_steps(base_recipe(VENV, CONSTRAINTS, PROJECT), root)
    assert runs(list(recipe.steps))[:2] == [VENV.run, CONSTRAINTS.run]
    _, _, apt, cython, make, project_step, *after = recipe.steps
    assert "apt-get install -y -q --no-install-recommends $(for p in libffi-dev; do" in apt.run
    assert not apt.required
    assert (cython.run, make.run, project_step) == ("uv pip install Cython", "make cython", PROJECT)
    assert runs(after) == ["uv pip install setuptools", "python setup.py build_ext -i"]
    assert any(note.startswith("CI set-up replayed before") for note in notes)
    assert "# CI set-up: .github/workflows/tests.yml job test, step 3" in recipe.dockerfile("src", "abc")


def test_rust_gets_debians_toolchain_and_uncompiled_cython_is_generated(tmp_path):
    rust = write(tmp_path / "rust", {"pyproject.toml": '[build-system]\nbuild-backend = "maturin"\n'})
    recipe, _ = add_setup_steps(base_recipe(VENV, PROJECT), rust)
    assert "--no-install-recommends rustc-web cargo-web" in recipe.steps[1].run and recipe.steps[1].required
    pyx = write(
        tmp_path / "pyx",
        {"setup.py": 'Extension("m._s", ["m/_s.c"]), Extension("m._t", ["m/_t.cpp"])', "m/_s.pyx": "",
         "m/_t.pyx": ""},
    )  # fmt: skip
    recipe, _ = add_setup_steps(base_recipe(VENV, PROJECT), pyx)
    assert recipe.steps[1].run == (
        "uv pip install Cython && cython m/_s.pyx -o m/_s.c && cython --cplus m/_t.pyx -o m/_t.cpp"
    )
    pure = write(tmp_path / "pure", {"setup.py": "setup()"})
    assert add_setup_steps(base_recipe(VENV, PROJECT), pure)[0] == base_recipe(VENV, PROJECT)


def test_a_pinned_cython_installed_on_the_same_line_is_replayed_with_it(tmp_path):
    steps = "      - run: pip install cython==3.0.11 && cython -3 pkg/_x.pyx\n      - run: tox\n"
    setup = read_setup(project(tmp_path, steps))
    assert runs(setup.before) == ["uv pip install cython==3.0.11", "cython -3 pkg/_x.pyx"]
