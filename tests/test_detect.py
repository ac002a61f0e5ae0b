"""Install-plan detection over fixture projects written into ``tmp_path`` by each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.detect import InstallPlan, detect
from images.readers.pytest_config import explicit_test_files
from tests.repos import write as make


def evidence(plan: InstallPlan) -> str:
    return "\n".join(plan.evidence)


def workflow_running_tests(install: str) -> str:
    """A GitHub workflow whose one job runs ``install``, then the tests."""
    return f"on: push\njobs:\n  build:\n    steps:\n      - run: {install}\n      - run: pytest\n"


# --- packaging metadata -----------------------------------------------------------------------------


def test_setuptools_pyproject(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [build-system]
                    requires = ["setuptools>=61"]
                    build-backend = "setuptools.build_meta"

                    [project]
                    name = "widget"
                    version = "1.4.0"
                    requires-python = ">=3.9"
                    dependencies = ["attrs"]

                    [project.optional-dependencies]
                    docs = ["sphinx"]
                    dev = ["widget[test]", "ruff"]
                    lint = ["flake8"]
                    testing = ["pytest>=7", "hypothesis"]
                    typing = ["mypy"]
                """,
                "src/widget/__init__.py": "",
                "tests/test_widget.py": "",
            },
        )
    )
    assert plan.is_python and plan.installable
    assert (plan.name, plan.version, plan.requires_python) == ("widget", "1.4.0", ">=3.9")
    assert plan.build_backend == "setuptools.build_meta"
    assert plan.extras == ("testing", "dev")  # test words before dev words, whatever the file order
    assert plan.test_paths == ("tests",)
    assert plan.packages == ("pytest",)
    assert plan.pytest_args == ()
    text = evidence(plan)
    assert "extras dev, testing: pyproject.toml [project.optional-dependencies]" in text
    assert "extras docs, lint, typing not installed (not test-related): pyproject.toml" in text
    assert "build backend setuptools.build_meta: pyproject.toml [build-system] build-backend" in text


def test_dynamic_version_is_not_static(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [build-system]
                    requires = ["setuptools", "setuptools_scm"]
                    build-backend = "setuptools.build_meta"
                    [project]
                    name = "scm-thing"
                    version = "0.0.0"
                    dynamic = ["version"]
                """
            },
        )
    )
    assert plan.version is None


def test_all_extra_only_when_no_test_extra_and_small(tmp_path: Path) -> None:
    small = make(
        tmp_path / "small",
        {
            "pyproject.toml": """
                [project]
                name = "small"
                [project.optional-dependencies]
                all = ["requests", "rich"]
                full = ["small[all]", "numpy"]
                docs = ["sphinx"]
            """
        },
    )
    plan = detect(small)
    assert plan.extras == ("all",)
    text = evidence(plan)
    assert "extras all: pyproject.toml [project.optional-dependencies] (no test extra" in text
    # "full" pulls in another extra of the project itself, so its size is unknown: not small.
    assert "extra full not installed: no test extra, but it is large or pulls in other extras" in text

    big = make(
        tmp_path / "big",
        {
            "pyproject.toml": """
                [project]
                name = "big"
                [project.optional-dependencies]
                all = ["dep0", "dep1", "dep2"]
                test = ["pytest"]
            """
        },
    )
    assert detect(big).extras == ("test",)

    large = make(
        tmp_path / "large",
        {
            "pyproject.toml": """
                [project]
                name = "large"
                [project.optional-dependencies]
                all = [{}]
            """.format(", ".join(f'"dep{i}"' for i in range(11)))
        },
    )
    assert detect(large).extras == ()


def test_setup_cfg_and_setup_py_legacy_project(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "setup.cfg": """
                    [metadata]
                    name = legacy-lib
                    version = attr: legacy_lib.__version__

                    [options]
                    python_requires = >=3.7
                    tests_require =
                        pytest-mock
                        freezegun>=1.0

                    [options.extras_require]
                    testing =
                        pytest
                        responses
                    docs = sphinx
                """,
                "setup.py": """
                    from setuptools import setup

                    EXTRAS = {"ci": ["tox"], "benchmark": ["asv"]}

                    setup(
                        name="legacy-lib",
                        version="2.0.1",
                        extras_require=EXTRAS,
                        tests_require=["mock", "legacy-lib[testing]", "freezegun"],
                        long_description=open("README.rst").read(),
                    )
                """,
                "legacy_lib/__init__.py": "__version__ = '2.0.1'\n",
            },
        )
    )
    assert plan.installable
    assert plan.name == "legacy-lib"
    # setup.cfg's version is computed (attr:), so setup.py's literal is the static one.
    assert plan.version == "2.0.1"
    assert plan.requires_python == ">=3.7"
    assert plan.build_backend == "setuptools.build_meta:__legacy__"
    assert plan.extras == ("testing", "ci")
    assert plan.packages == ("pytest-mock", "freezegun>=1.0", "mock", "pytest")
    text = evidence(plan)
    assert "version 2.0.1: setup.py setup(version=...)" in text
    assert "extras testing: setup.cfg [options.extras_require]" in text
    assert "extras ci: setup.py setup(extras_require=...)" in text
    assert "packages mock: setup.py setup(tests_require=...); already listed: freezegun" in text
    assert "the project itself: legacy-lib[testing]" in text


def test_setup_py_only(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "setup.py": """
                    import setuptools
                    NAME = "oldie"
                    setuptools.setup(
                        name=NAME,
                        version=get_version(),
                        python_requires=">=3.6",
                        extras_require={"test": ["nose2"], "docs": ["sphinx"]},
                        tests_require=["pytest-runner-free"],
                    )
                """,
            },
        )
    )
    assert (plan.name, plan.version, plan.requires_python) == ("oldie", None, ">=3.6")
    assert plan.extras == ("test",)
    assert plan.packages == ("pytest-runner-free", "pytest")


def test_hatch_environments(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [build-system]
                    requires = ["hatchling"]
                    build-backend = "hatchling.build"

                    [project]
                    name = "hatched"
                    dynamic = ["version"]
                    [project.optional-dependencies]
                    cli = ["click"]

                    [tool.hatch.envs.default]
                    dependencies = ["coverage[toml]>=6.5", "pytest", "hatched @ {root:uri}"]
                    [tool.hatch.envs.hatch-test]
                    extra-dependencies = ["pytest-asyncio"]
                    features = ["cli"]
                    [tool.hatch.envs.lint]
                    dependencies = ["black"]
                """,
            },
        )
    )
    assert plan.build_backend == "hatchling.build"
    assert plan.packages == ("coverage[toml]>=6.5", "pytest", "pytest-asyncio")
    assert plan.extras == ("cli",)
    text = evidence(plan)
    assert "skipped in pyproject.toml [tool.hatch.envs.default] dependencies: hatched @ {root:uri}" in text
    assert "extras cli: pyproject.toml [tool.hatch.envs.hatch-test] features" in text


def test_flit_pep621_and_legacy_metadata(tmp_path: Path) -> None:
    modern = make(
        tmp_path / "modern",
        {
            "pyproject.toml": """
                [build-system]
                requires = ["flit_core >=3.2,<4"]
                build-backend = "flit_core.buildapi"
                [project]
                name = "flitty"
                dynamic = ["version", "description"]
                [project.optional-dependencies]
                test = ["pytest", "pytest-cov"]
                doc = ["sphinx"]
            """,
            "flitty.py": '"""Doc."""\n__version__ = "0.3"\n',
        },
    )
    plan = detect(modern)
    assert (plan.build_backend, plan.name, plan.version, plan.extras) == (
        "flit_core.buildapi",
        "flitty",
        None,
        ("test",),
    )

    legacy = make(
        tmp_path / "legacy",
        {
            "pyproject.toml": """
                [build-system]
                requires = ["flit_core >=2,<4"]
                build-backend = "flit_core.buildapi"
                [tool.flit.metadata]
                module = "oldflit"
                requires-python = ">=3.6"
                [tool.flit.metadata.requires-extra]
                test = ["pytest"]
                doc = ["sphinx"]
            """,
        },
    )
    plan = detect(legacy)
    assert (plan.name, plan.requires_python, plan.extras) == ("oldflit", ">=3.6", ("test",))


def test_poetry_groups_and_constraints(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [build-system]
                    requires = ["poetry-core>=1.0.0"]
                    build-backend = "poetry.core.masonry.api"

                    [tool.poetry]
                    name = "poem"
                    version = "0.9.2"

                    [tool.poetry.dependencies]
                    python = "^3.8"
                    requests = "^2.28"

                    [tool.poetry.extras]
                    socks = ["pysocks"]

                    [tool.poetry.dev-dependencies]
                    black = "*"

                    [tool.poetry.group.test.dependencies]
                    pytest = "^7.2"
                    pytest-mock = "~3.10"
                    freezegun = "1.2.2"
                    httpx = { version = ">=0.23,<1", extras = ["http2"] }
                    tomli = { version = "^2.0", markers = "python_version < '3.11'" }
                    localpkg = { path = "../localpkg", develop = true }
                    gitdep = { git = "https://github.com/x/gitdep.git" }

                    [tool.poetry.group.docs.dependencies]
                    mkdocs = "^1.4"
                """,
            },
        )
    )
    assert (plan.name, plan.version, plan.requires_python) == ("poem", "0.9.2", ">=3.8")
    assert plan.build_backend == "poetry.core.masonry.api"
    assert plan.packages == (
        "black",
        "pytest>=7.2",
        "pytest-mock>=3.10",
        "freezegun==1.2.2",
        "httpx[http2]>=0.23,<1",
        "tomli>=2.0; python_version < '3.11'",
    )
    assert plan.extras == ()
    text = evidence(plan)
    assert "skipped in pyproject.toml [tool.poetry.group.test.dependencies]: localpkg" in text
    assert "gitdep (path, git or url dependency)" in text
    assert "poetry groups docs not installed (not test-related): pyproject.toml" in text


def test_pdm_dev_dependencies(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [build-system]
                    requires = ["pdm-backend"]
                    build-backend = "pdm.backend"
                    [project]
                    name = "pdmproj"
                    version = "1.0"
                    [tool.pdm.dev-dependencies]
                    lint = ["ruff"]
                    test = ["pytest>=7", "-e file:///${PROJECT_ROOT}/plugins/extra#egg=extra"]
                    dev = ["ipdb"]
                """,
            },
        )
    )
    assert plan.build_backend == "pdm.backend"
    assert plan.packages == ("pytest>=7", "ipdb")
    assert "pdm dev groups lint not installed (not test-related): pyproject.toml" in evidence(plan)


def test_pep735_dependency_groups(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [project]
                    name = "grouped"
                    version = "3"
                    [dependency-groups]
                    typing = ["mypy"]
                    dev = [{include-group = "test"}, "ruff"]
                    test = ["pytest", "coverage"]
                    docs = ["sphinx"]
                """,
            },
        )
    )
    assert plan.dependency_groups == ("test", "dev")
    assert plan.installable
    # No build-system table: pip builds with setuptools' legacy backend.
    assert plan.build_backend == "setuptools.build_meta:__legacy__"
    text = evidence(plan)
    assert "dependency groups test, dev: pyproject.toml [dependency-groups]" in text
    assert "dependency groups typing, docs not installed (not test-related): pyproject.toml" in text


# --- requirement files, tox, nox, CI ------------------------------------------------------------------


def test_requirement_files(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "setup.py": "from setuptools import setup\nsetup(name='reqs')\n",
                "requirements.txt": "requests>=2\n",
                "requirements-dev.txt": "-r requirements.txt\npytest\n",
                "requirements-docs.txt": "sphinx\n",
                "dev-requirements.txt": "ipdb\n",
                "requirements-testing.txt": "# install me\n-e .[test]\n",
                "requirements-py27.txt": "mock\n",
                "requirements/test.txt": "pytest==7.4.0\n",
                "requirements/test.in": "pytest\n",
                "requirements/ci.in": "tox-free-ci-dep\n",
                "requirements/lint.txt": "flake8\n",
                "requirements/typing.txt": "mypy\n",
                "requirements/docs-dev.txt": "sphinx-autobuild\n",
                "requirements/base.txt": "attrs\n",
                "tests/requirements.txt": "responses\n",
                "tests/requirements-lint.txt": "pylint\n",
                "docs/requirements.txt": "furo\n",
            },
        )
    )
    assert plan.requirement_files == (
        "requirements.txt",
        "requirements/base.txt",
        "dev-requirements.txt",
        "requirements-dev.txt",
        "requirements/ci.in",
        "requirements/test.txt",
        "tests/requirements.txt",
    )
    # The file holding only "-e .[test]" is not installed, but the extra it asks for is requested.
    text = evidence(plan)
    assert "requirement file requirements-testing.txt not installed: it lists only the project itself" in text
    assert (
        "requirement files requirements-docs.txt, requirements-py27.txt, requirements/docs-dev.txt, "
        "requirements/lint.txt, requirements/typing.txt, tests/requirements-lint.txt not installed "
        "(not for tests or runtime)"
    ) in text
    assert plan.extras == ("test",)


def test_tox_ini(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "setup.py": "import setuptools\nsetuptools.setup(name='toxic', extras_require={'s3': []})\n",
                "ci/test-deps.txt": "pytest\n",
                "constraints.txt": "pytest<9\n",
                "tox.ini": """
                    [tox]
                    envlist = py27, py311, lint

                    [base]
                    deps =
                        hypothesis>=6
                        pytest-mock

                    [testenv]
                    deps =
                        -r{toxinidir}/ci/test-deps.txt
                        -c constraints.txt
                        {[base]deps}
                        Django >= 4.2  # inline comment
                        django32: Django<3.3
                        {env:EXTRA_DEP:}
                        .[s3]
                    extras = s3
                    commands = pytest {posargs}

                    [testenv:py27]
                    deps = mock==3.0.5

                    [testenv:lint]
                    deps = flake8

                    [testenv:test-slow]
                    deps = pytest-timeout
                """,
            },
        )
    )
    assert plan.requirement_files == ("ci/test-deps.txt",)
    assert plan.packages == ("hypothesis>=6", "pytest-mock", "Django >= 4.2", "pytest-timeout", "pytest")
    assert plan.extras == ("s3",)
    text = evidence(plan)
    assert "requirement file ci/test-deps.txt: tox.ini [testenv]" in text
    assert "django32: Django<3.3 (factor-conditional)" in text
    assert "{env:EXTRA_DEP:} (substitution)" in text
    assert "tox.ini environments py27, lint not read (not tests, or for Python < 3.8)" in text


def test_noxfile(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [project]
                    name = "noxed"
                    version = "1"
                    [project.optional-dependencies]
                    testing = ["pytest"]
                    docs = ["sphinx"]
                """,
                "requirements/tests.txt": "freezegun\n",
                "requirements/self.txt": "-e .\n",
                "noxfile.py": """
                    import nox

                    DEPS = ["x"]

                    @nox.session(python=["3.11", "3.12"])
                    def tests(session):
                        session.install("-e", ".[testing,speedups]", "-r", "requirements/self.txt")
                        session.install("pytest-xdist", "-r", "requirements/tests.txt", "--upgrade")
                        session.install(*DEPS)
                        session.run("pytest")

                    @nox.session
                    def docs(session):
                        session.install(".[docs]", "sphinx-rtd-theme")
                """,
            },
        )
    )
    assert plan.packages == ("pytest-xdist", "pytest")
    assert plan.requirement_files == ("requirements/tests.txt",)
    assert plan.extras == ("testing",)
    text = evidence(plan)
    assert "packages pytest-xdist: noxfile.py tests() session.install" in text
    assert "skipped in noxfile.py tests() session.install: *DEPS (not a literal)" in text
    assert "noxfile.py sessions docs not read (not test-related)" in text
    assert (
        "extra speedups not installed: not declared, though noxfile.py tests() session.install asks" in text
    )
    assert "requirement file requirements/self.txt not installed: it lists only the project itself" in text


WORKFLOW = """
name: CI
on: [push, pull_request]
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - run: pip install flake8 black
  tests:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        python: ["3.11", "3.12"]
    steps:
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python }}
      - name: Install
        run: |
          python -m pip install --upgrade pip setuptools wheel
          pip install -e ".[test,docs]" \\
            "pytest-cov>=4" \\
            -r requirements-ci.txt \\
            ${{ matrix.extra }} codecov
          pip install --pre "numpy<2" && pip install -q hypothesis  # fuzzing
      - run: pytest
  oldest:
    runs-on: ubuntu-latest
    steps:
      - run: uv pip install --system "attrs==21.3.0" "numpy==1.22"
      - run: python -m pytest -x
  triage:
    runs-on: ubuntu-latest
    steps:
      - run: pip install issue-labeler
      - run: label-issues --all
"""


def test_github_workflow(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "pyproject.toml": """
                    [project]
                    name = "flowing"
                    version = "1"
                    [project.optional-dependencies]
                    test = ["pytest"]
                    docs = ["sphinx"]
                """,
                "requirements-ci.txt": "pytest-randomly\n",
                ".github/workflows/ci.yml": WORKFLOW,
                ".github/workflows/docs.yml": workflow_running_tests("pip install furo"),
                ".github/workflows/pre_commit.yml": workflow_running_tests("pip install isort"),
            },
        )
    )
    assert plan.packages == ("pytest-cov>=4", "numpy<2", "hypothesis", "attrs", "pytest")
    assert plan.requirement_files == ("requirements-ci.txt",)
    assert plan.extras == ("test",)
    text = evidence(plan)
    assert (
        "packages pytest-cov>=4, numpy<2, hypothesis: .github/workflows/ci.yml job tests pip install" in text
    )
    assert (
        "skipped in .github/workflows/ci.yml job tests pip install: pip (tooling), setuptools (tooling), "
        "wheel (tooling), ${{matrix.extra}} (substitution), codecov (tooling)"
    ) in text
    assert (
        "packages attrs: .github/workflows/ci.yml job oldest pip install, version constraints dropped "
        "(a variant of an earlier job); already listed: numpy"
    ) in text
    assert (
        "CI .github/workflows/ci.yml job lint, .github/workflows/docs.yml, .github/workflows/pre_commit.yml "
        "not read (docs, lint or publishing)"
    ) in text
    assert "CI .github/workflows/ci.yml job triage not read (runs no tests)" in text
    assert "extra docs not installed (not needed for tests): .github/workflows/ci.yml job tests" in text


def test_travis_only_without_github_workflows(tmp_path: Path) -> None:
    travis = "install:\n  - pip install nose-free-dep\nscript:\n  - pytest\n"
    root = make(tmp_path, {"setup.py": "", ".travis.yml": travis})
    assert detect(root).packages == ("nose-free-dep", "pytest")
    make(tmp_path, {".github/workflows/test.yml": workflow_running_tests("pip install tox")})
    assert detect(root).packages == ("pytest",)


# --- pytest configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "plugins"),
    [
        (
            {"pytest.ini": "[pytest]\naddopts = --cov=pkg --cov-report=term -n auto\n"},
            ["pytest-cov", "pytest-xdist"],
        ),
        ({"pytest.ini": "[pytest]\naddopts = -p xdist -p no:cacheprovider\n"}, ["pytest-xdist"]),
        ({"pytest.ini": "[pytest]\naddopts = -ppytest_cov --doctest-modules\n"}, ["pytest-cov"]),
        (
            {"pytest.ini": "[pytest]\naddopts = --numprocesses=4 --timeout=60\n"},
            ["pytest-xdist", "pytest-timeout"],
        ),
        ({"setup.cfg": "[tool:pytest]\ntimeout = 300\nenv =\n    A=1\n"}, ["pytest-timeout", "pytest-env"]),
        (
            {"tox.ini": "[pytest]\nasyncio_mode = auto\nmock_use_standalone_module = true\n"},
            ["pytest-asyncio", "pytest-mock"],
        ),
        (
            {"pyproject.toml": '[tool.pytest.ini_options]\naddopts = "--benchmark-skip --reruns 2 --mypy"\n'},
            ["pytest-benchmark", "pytest-rerunfailures", "pytest-mypy"],
        ),
        (
            {
                "pyproject.toml": """
                    [tool.pytest]
                    addopts = ["--flake8", "--html=report.html", "--hypothesis-show-statistics"]
                """
            },
            ["pytest-flake8", "pytest-html", "hypothesis"],
        ),
        ({"pytest.ini": "[pytest]\naddopts = --doctest-modules --doctest-glob=*.rst -ra\n"}, []),
        (
            {"pytest.ini": "[pytest]\nrequired_plugins = pytest-django>=4 pytest-env\n"},
            ["pytest-django>=4", "pytest-env"],
        ),
        ({"pyproject.toml": '[project]\nname = "e"\n[tool.pytest_env]\nA = "1"\n'}, ["pytest-env"]),
        # pytest 9's own TOML file wins over pyproject.toml.
        (
            {
                "pytest.toml": '[pytest]\naddopts = ["-n", "2"]\n',
                "pyproject.toml": "[tool.pytest]\naddopts = ['--cov']",
            },
            ["pytest-xdist"],
        ),
    ],
)
def test_pytest_config_implies_plugins(tmp_path: Path, files: dict[str, str], plugins: list[str]) -> None:
    plan = detect(make(tmp_path, {"mod.py": "", **files}))
    assert plan.packages == (*plugins, "pytest")


def test_pytest_config_precedence_and_testpaths(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        {
            "pyproject.toml": '[project]\nname = "p"\n[tool.pytest.ini_options]\naddopts = "--cov"\n',
            "pytest.ini": "[pytest]\ntestpaths = src/p/tests missing\naddopts = -ra\n",
            "src/p/tests/test_a.py": "",
            "tests/test_b.py": "",
        },
    )
    plan = detect(root)
    # pytest.ini wins over pyproject.toml, as in pytest: no --cov, so no pytest-cov.
    assert plan.packages == ("pytest",)
    assert plan.test_paths == ("src/p/tests",)
    text = evidence(plan)
    assert "pytest config: pytest.ini [pytest]" in text
    assert "testpaths missing not found: pytest.ini [pytest]" in text
    assert "test paths src/p/tests: pytest.ini [pytest] testpaths" in text


def test_testpaths_missing_falls_back_to_directories(tmp_path: Path) -> None:
    root = make(
        tmp_path, {"setup.cfg": "[tool:pytest]\ntestpaths = gone\n", "test/test_x.py": "", "testing/x.py": ""}
    )
    assert detect(root).test_paths == ("test", "testing")


def test_pytest_listed_once_with_its_constraint(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        {
            "setup.py": """
                import setuptools
                setuptools.setup(name="Self_Pkg", tests_require=["PyTest<8", "pytest"])
            """,
            "tox.ini": """
                [testenv]
                deps =
                    pytest_cov
                    Pytest-Cov>=4
                    self-pkg[extra]
                    tomli; python_version < "3.11"
                    tomli>=2; python_version >= "3.11"
            """,
        },
    )
    plan = detect(root)
    assert plan.packages == (
        "PyTest<8",
        "pytest_cov",
        'tomli; python_version < "3.11"',
        'tomli>=2; python_version >= "3.11"',
    )
    text = evidence(plan)
    assert "already listed: pytest" in text
    assert "always installed" not in text
    assert "already listed: Pytest-Cov>=4; the project itself: self-pkg[extra]" in text


# --- sdists, non-Python repositories, broken files ----------------------------------------------------


def test_sdist_pkg_info_metadata(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "PKG-INFO": """
                    Metadata-Version: 2.1
                    Name: sdisted
                    Version: 4.5.6
                    Requires-Python: >=3.8
                    Provides-Extra: tests
                    Requires-Dist: pytest; extra == "tests"
                    Provides-Extra: docs
                    Requires-Dist: sphinx; extra == "docs"

                    Long description here.
                """,
                "pyproject.toml": """
                    [build-system]
                    requires = ["setuptools>=64", "setuptools_scm>=8"]
                    build-backend = "setuptools.build_meta"
                    [tool.setuptools_scm]
                """,
                "setup.py": "from setuptools import setup\nsetup()\n",
            },
        )
    )
    assert (plan.name, plan.version, plan.requires_python) == ("sdisted", "4.5.6", ">=3.8")
    assert plan.extras == ("tests",)
    assert "version 4.5.6: PKG-INFO Version" in evidence(plan)


def test_non_python_repository(tmp_path: Path) -> None:
    plan = detect(
        make(
            tmp_path,
            {
                "README.md": "# A Go tool\n",
                "main.go": "package main\n",
                "docs/conf.py": "project = 'x'\n",
                "tests/helper.py": "",
                ".github/workflows/ci.yml": workflow_running_tests("python3 -m pip install mkdocs"),
            },
        )
    )
    assert not plan.is_python and not plan.installable
    assert plan.packages == ("mkdocs",)  # what CI installs is still reported, but not pytest
    assert plan.build_backend is None
    text = evidence(plan)
    assert (
        "not a Python project: no pyproject.toml, setup.py, setup.cfg or .py file outside tests and docs"
        in text
    )
    assert "nothing to install: not a Python project" in text


def test_scripts_only_repository(tmp_path: Path) -> None:
    plan = detect(
        make(tmp_path, {"tool/run.py": "print(1)\n", "requirements.txt": "click\n", "tests/test_run.py": ""})
    )
    assert plan.is_python and not plan.installable
    assert plan.build_backend is None
    assert plan.requirement_files == ("requirements.txt",)
    # Nothing at the root anchors pytest's rootdir: without --rootdir, ids would drop "tests/".
    assert plan.pytest_args == ("--rootdir=.",)
    assert "Python project: tool/run.py (no packaging files)" in evidence(plan)


def test_a_pytest_configuration_inside_the_test_folder_pins_the_rootdir(tmp_path: Path) -> None:
    files = {
        "pyproject.toml": '[project]\nname = "calc"\nversion = "1.0"\n',
        "src/calc/__init__.py": "",
        "tests/pytest.ini": "[pytest]\nmarkers = slow\n",
        "tests/test_calc.py": "def test_one():\n    pass\n",
    }
    plan = detect(make(tmp_path / "nested", files))
    # pytest would take tests/ as its rootdir from tests/pytest.ini, and name the test test_calc.py::...
    assert plan.pytest_args == ("--rootdir=.",)
    assert "tests/pytest.ini would make its folder pytest's rootdir" in evidence(plan)
    # A tox.ini without a [pytest] section configures tox only: pytest does not stop at it.
    files["tests/tox.ini"] = files.pop("tests/pytest.ini").replace("[pytest]", "[tox]")
    assert detect(make(tmp_path / "tox", files)).pytest_args == ()


def test_malformed_files_are_skipped_with_evidence(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        {
            "pyproject.toml": '[project\nname = "broken"\n',
            "setup.py": "from setuptools import setup\nsetup(name='still-works', version='1.0'\n",
            "setup.cfg": "name = no section header\n",
            "tox.ini": "[testenv]\ndeps = pytest-mock\n",
            "noxfile.py": "def tests(session:\n",
        },
    )
    plan = detect(root)
    assert plan.is_python
    # A broken pyproject.toml contributes no [build-system]; setup.py and setup.cfg still exist.
    assert plan.installable
    assert plan.name is None
    assert plan.packages == ("pytest-mock", "pytest")
    text = evidence(plan)
    assert "pyproject.toml skipped: malformed TOML (" in text
    assert "setup.py skipped: cannot be parsed (SyntaxError:" in text
    assert "setup.cfg skipped: malformed INI (" in text
    assert "noxfile.py skipped: cannot be parsed (SyntaxError:" in text


def test_wrongly_typed_pyproject_values_do_not_raise(tmp_path: Path) -> None:
    root = make(
        tmp_path,
        {
            "pyproject.toml": """
                build-system = "setuptools"
                [project]
                name = 3
                optional-dependencies = ["test"]
                dependency-groups = 1
                [tool.poetry]
                group = "test"
                [tool.pytest.ini_options]
                testpaths = 5
            """,
        },
    )
    plan = detect(root)
    assert plan.name is None and plan.extras == () and plan.test_paths == ()


def test_explicit_test_files_are_found_by_content(tmp_path: Path) -> None:
    make(
        tmp_path,
        {
            "tests/test.py": "import unittest\n\nclass Checks(unittest.TestCase):\n    pass\n",
            "tests/helpers.py": "def helper():\n    pass\n",
            "tests/conftest.py": "def test_not_here():\n    pass\n",
            "tests/deep/more.py": "def test_more():\n    pass\n",
            "docs/example.py": "def test_docs():\n    pass\n",
            "pkg/selfcheck.py": "async def test_async():\n    pass\n",
        },
    )
    assert explicit_test_files(tmp_path, ["tests"]) == ("tests/deep/more.py", "tests/test.py")
    assert explicit_test_files(tmp_path, []) == ("pkg/selfcheck.py", "tests/deep/more.py", "tests/test.py")


# --- lock files ---------------------------------------------------------------------------------------

PROJECT = '[project]\nname = "locked"\nversion = "1"\n[project.optional-dependencies]\ntest = ["pytest"]\n'


@pytest.mark.parametrize(
    ("rel", "text"),
    [
        (
            "uv.lock",
            """
            version = 1
            [[package]]
            name = "locked"
            version = "1"
            source = { editable = "." }
            [[package]]
            name = "pytest"
            version = "7.4.4"
            source = { registry = "https://example.invalid/simple" }
            [[package]]
            name = "iniconfig"
            version = "2.0.0"
            source = { registry = "https://example.invalid/simple" }
            [[package]]
            name = "from-git"
            version = "0.1"
            source = { git = "https://example.invalid/x.git" }
            """,
        ),
        (
            "poetry.lock",
            """
            [[package]]
            name = "pytest"
            version = "7.4.4"
            [[package]]
            name = "iniconfig"
            version = "2.0.0"
            [[package]]
            name = "from-git"
            version = "0.1"
            [package.source]
            type = "git"
            url = "https://example.invalid/x.git"
            """,
        ),
        (
            "pdm.lock",
            """
            [[package]]
            name = "pytest"
            version = "7.4.4"
            [[package]]
            name = "iniconfig"
            version = "2.0.0"
            [[package]]
            name = "from-git"
            version = "0.1"
            git = "https://example.invalid/x.git"
            """,
        ),
        (
            "pylock.toml",
            """
            lock-version = "1.0"
            created-by = "test"
            [[packages]]
            name = "pytest"
            version = "7.4.4"
            [[packages]]
            name = "iniconfig"
            version = "2.0.0"
            [[packages]]
            name = "from-git"
            vcs = { type = "git", url = "https://example.invalid/x.git", commit-id = "abc" }
            """,
        ),
        (
            "Pipfile.lock",
            """
            {"_meta": {}, "default": {"iniconfig": {"version": "==2.0.0"}},
             "develop": {"pytest": {"version": "==7.4.4"}, "from-git": {"git": "https://example.invalid/x.git"}}}
            """,
        ),
    ],
    ids=lambda value: value if value.endswith(("lock", ".toml")) else "",
)
def test_lock_files_pin_index_versions(tmp_path: Path, rel: str, text: str) -> None:
    plan = detect(make(tmp_path, {"pyproject.toml": PROJECT, rel: text}))
    assert plan.lock_file == rel
    assert plan.pins == ("iniconfig==2.0.0", "pytest==7.4.4")
    assert f"lock file {rel}: 2 versions pinned for every install step" in evidence(plan)
    assert plan.extras == ("test",), "the plan still says what to install; the pins only constrain it"


def test_uv_lock_wins_over_other_locks_and_ambiguous_versions_stay_unpinned(tmp_path: Path) -> None:
    uv_lock = """
        [[package]]
        name = "numpy"
        version = "1.26.4"
        source = { registry = "https://example.invalid/simple" }
        [[package]]
        name = "numpy"
        version = "2.1.0"
        source = { registry = "https://example.invalid/simple" }
        [[package]]
        name = "pytest"
        version = "8.0.0"
        source = { registry = "https://example.invalid/simple" }
    """
    poetry_lock = '[[package]]\nname = "pytest"\nversion = "6.0.0"\n'
    plan = detect(make(tmp_path, {"pyproject.toml": PROJECT, "uv.lock": uv_lock, "poetry.lock": poetry_lock}))
    assert (plan.lock_file, plan.pins) == ("uv.lock", ("pytest==8.0.0",))
    assert "not pinned, several versions locked: numpy" in evidence(plan)


def test_pinned_constraints_and_compiled_requirements_are_locks(tmp_path: Path) -> None:
    compiled = (
        "# autogenerated by pip-compile\nattrs==23.1.0\n    # via x\n"
        "pluggy==1.3.0 \\\n    --hash=sha256:aa\npytest==7.4.4\n"
    )
    plan = detect(make(tmp_path / "a", {"pyproject.toml": PROJECT, "requirements-test.txt": compiled}))
    assert plan.lock_file == "requirements-test.txt"
    assert plan.pins == ("attrs==23.1.0", "pluggy==1.3.0", "pytest==7.4.4")
    assert "pinned requirements requirements-test.txt" in evidence(plan)

    loose = "attrs>=23\npluggy==1.3.0\npytest==7.4.4\n"
    plan = detect(make(tmp_path / "b", {"pyproject.toml": PROJECT, "requirements-test.txt": loose}))
    assert (plan.lock_file, plan.pins) == (None, ())
    assert "lock file: none found" in evidence(plan)

    constraints = "attrs==23.1.0\npluggy==1.3.0\npytest==7.4.4\n"
    plan = detect(make(tmp_path / "c", {"pyproject.toml": PROJECT, "constraints.txt": constraints}))
    assert plan.lock_file == "constraints.txt" and len(plan.pins) == 3


def test_a_named_pylock_for_tests_is_preferred(tmp_path: Path) -> None:
    lock = '[[packages]]\nname = "pytest"\nversion = "{}"\n'
    files = {
        "pyproject.toml": PROJECT,
        "pylock.docs.toml": lock.format("6.0.0"),
        "pylock.test.toml": lock.format("7.0.0"),
    }
    plan = detect(make(tmp_path, files))
    assert (plan.lock_file, plan.pins) == ("pylock.test.toml", ("pytest==7.0.0",))


def test_a_malformed_lock_is_skipped_with_evidence(tmp_path: Path) -> None:
    plan = detect(make(tmp_path, {"pyproject.toml": PROJECT, "uv.lock": "[[package]\n", "Pipfile.lock": "{"}))
    assert (plan.lock_file, plan.pins) == (None, ())
    assert "uv.lock skipped: malformed TOML" in evidence(plan)
    assert "Pipfile.lock skipped: malformed JSON" in evidence(plan)


def test_ci_jobs_are_read_as_yaml(tmp_path: Path) -> None:
    workflow = """
        on: push
        jobs:
          docs:
            steps:
              - run: pip install sphinx && make test-docs
          "unit tests":
            strategy:
              matrix:
                python: ["3.10", "3.12"]
            steps:
              - name: install
                run: |
                  python -m pip install \\
                    hypothesis 'pytest-xdist>=3'
              - run: pytest -n auto
    """
    plan = detect(
        make(
            tmp_path,
            {"setup.py": "from setuptools import setup\nsetup()\n", ".github/workflows/ci.yml": workflow},
        )
    )
    assert "hypothesis" in plan.packages and "pytest-xdist>=3" in plan.packages
    assert "sphinx" not in plan.packages
    text = evidence(plan)
    assert ".github/workflows/ci.yml job unit tests pip install" in text
    assert "job docs not read" in text or ".github/workflows/ci.yml job docs" in text

    broken = detect(
        make(
            tmp_path / "broken",
            {"setup.py": "", ".github/workflows/ci.yml": "jobs: [\n  pip install x && pytest\n"},
        )
    )
    assert "malformed YAML" in evidence(broken) and "x" in broken.packages
