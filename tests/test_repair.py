"""From error logs to repairs, and import names to distributions.

Pytest's messages are produced by running this interpreter's pytest on small generated projects. The
pip, uv, setuptools-scm and pbr excerpts were captured from real runs (pip 23.2 and 26.3, uv 0.13,
setuptools-scm 10, pbr 7) against a local package index; only paths were shortened.
"""

# pip marks failures with U+00D7 (multiplication sign); the excerpts keep its output verbatim.
# ruff: noqa: RUF001

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from images.import_map import DISTRIBUTIONS, distribution_for
from images.repair import WHY_LENGTH, Repair, diagnose
from tests.repos import run_pytest
from tests.repos import write as project


def pytest_output(root: Path, *args: str) -> str:
    done = run_pytest(root, *args)
    return done.stdout + done.stderr


def pairs(repairs: list[Repair]) -> list[tuple[str, str]]:
    return [(repair.kind, repair.value) for repair in repairs]


def excerpt(text: str) -> str:
    return textwrap.dedent(text).strip("\n") + "\n"


PLUGIN_TESTS = """
    import pytest

    def test_mocked(mocker):
        pass

    async def test_coroutine():
        pass

    @pytest.mark.asyncio
    async def test_marked():
        pass
"""


@pytest.fixture(scope="module")
def plugins_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ini = "[pytest]\nasyncio_mode = auto\ntimeout = 30\nenv =\n    APP_ENV=test\n"
    return project(tmp_path_factory.mktemp("plugins"), {"pytest.ini": ini, "tests/test_a.py": PLUGIN_TESTS})


# -- missing modules ------------------------------------------------------------------------------------


def test_missing_modules_from_real_collection_errors(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "tests/__init__.py": "",
            "tests/test_dist.py": "import forager_absent_dist.sub\n",
            "tests/test_local.py": "from tests.helpers import make\n",
            "tests/test_name.py": "from json import no_such_name\n",
        },
    )
    output = pytest_output(root)
    assert "ModuleNotFoundError: No module named 'forager_absent_dist'" in output
    assert "ModuleNotFoundError: No module named 'tests.helpers'" in output
    assert "ImportError: cannot import name 'no_such_name' from 'json'" in output
    # Only the third-party module is installable: the other two are the project's own or a wrong name.
    assert pairs(diagnose(output)) == [("install", "forager-absent-dist")]


@pytest.mark.parametrize(
    ("line", "distribution"),
    [
        ("ModuleNotFoundError: No module named 'yaml'", "PyYAML"),
        ("E   ModuleNotFoundError: No module named 'PIL.Image'", "Pillow"),
        ("ModuleNotFoundError: No module named 'sklearn.linear_model'", "scikit-learn"),
        ("ModuleNotFoundError: No module named 'google.cloud.storage'", "google-cloud-storage"),
        ("ModuleNotFoundError: No module named 'google.protobuf'", "protobuf"),
        ("ImportError: No module named dateutil.parser", "python-dateutil"),
        ("ImportError: Error importing plugin \"xdist\": No module named 'xdist'", "pytest-xdist"),
        ("/usr/bin/python3: No module named pytest", "pytest"),
        ("ModuleNotFoundError: No module named '_pytest'", "pytest"),
        ("ModuleNotFoundError: No module named 'distutils'", "setuptools"),
    ],
)
def test_missing_module_installs_its_distribution(line: str, distribution: str) -> None:
    assert pairs(diagnose(line)) == [("install", distribution)]


@pytest.mark.parametrize(
    "module",
    [
        "os.path",
        "sqlite3",
        "_ssl",
        "tomllib",
        "tests",
        "test_helpers",
        "conftest",
        "_private",
        "pkg._version",
    ],
)
def test_standard_library_and_project_modules_are_not_installed(module: str) -> None:
    assert diagnose(f"ModuleNotFoundError: No module named '{module}'") == []


def test_a_module_shadowed_by_a_plain_module_is_not_installed() -> None:
    line = "ModuleNotFoundError: No module named 'yaml.loader'; 'yaml' is not a package"
    assert diagnose(line) == []


def test_cannot_import_name_has_no_certain_repair() -> None:
    line = (
        "ImportError: cannot import name 'soft_unicode' from 'markupsafe' (/venv/lib/markupsafe/__init__.py)"
    )
    assert diagnose(line) == []


# -- installed releases newer than the project expects --------------------------------------------------

#: A plugin in a folder named site-packages, as an installed one is, loaded by the project's conftest.
OLD_PLUGIN_CONFTEST = """\
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "site-packages"))
pytest_plugins = ["pytest_oldplugin"]
"""


def test_a_name_pytest_no_longer_has_steps_pytest_back(tmp_path: Path) -> None:
    # As a conftest importing _pytest.monkeypatch.notset fails on the pytest release that removed it.
    root = project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "conftest.py": "from _pytest.monkeypatch import notset_in_some_old_release\n",
            "tests/test_a.py": "def test_a():\n    pass\n",
        },
    )
    output = pytest_output(root)
    assert "ImportError: cannot import name 'notset_in_some_old_release' from '_pytest.monkeypatch'" in output
    assert pairs(diagnose(output)) == [("step_back", "pytest")]


def test_an_attribute_pytest_no_longer_has_steps_pytest_back(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "conftest.py": "import pytest\n\nInstance = pytest.InstanceOfSomeOldRelease\n",
            "tests/test_a.py": "def test_a():\n    pass\n",
        },
    )
    output = pytest_output(root)
    assert "AttributeError: module 'pytest' has no attribute 'InstanceOfSomeOldRelease'" in output
    assert pairs(diagnose(output)) == [("step_back", "pytest")]


def test_an_internal_error_raised_in_a_plugin_steps_pytest_then_the_plugin_back(tmp_path: Path) -> None:
    # As a pinned plugin reading config.inicfg, which a newer pytest changed, ends in INTERNALERROR.
    root = project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "conftest.py": OLD_PLUGIN_CONFTEST,
            "site-packages/pytest_oldplugin/__init__.py": (
                "def pytest_collection_modifyitems(config, items):\n    config.inicfg_that_moved\n"
            ),
            "tests/test_a.py": "def test_a():\n    pass\n",
        },
    )
    output = pytest_output(root)
    assert "INTERNALERROR> AttributeError: 'Config' object has no attribute 'inicfg_that_moved'" in output
    assert pairs(diagnose(output)) == [("step_back", "pytest"), ("step_back", "pytest-oldplugin")]


def test_a_deprecation_turned_error_inside_a_plugin_steps_pytest_then_the_plugin_back() -> None:
    # As a code formatter's pinned plugin reading config.inicfg, which the newest pytest deprecated,
    # under filterwarnings = error.
    log = excerpt(
        """
        INTERNALERROR> Traceback (most recent call last):
        INTERNALERROR>   File "/venv/site-packages/_pytest/main.py", line 289, in wrap_session
        INTERNALERROR>     config._do_configure()
        INTERNALERROR>   File "/venv/site-packages/pluggy/_callers.py", line 103, in _multicall
        INTERNALERROR>     res = hook_impl.function(*args)
        INTERNALERROR>   File "/venv/site-packages/pytest_formatcheck/plugin.py", line 40, in pytest_configure
        INTERNALERROR>     ini = config.inicfg
        INTERNALERROR>   File "/venv/site-packages/_pytest/config/__init__.py", line 1100, in inicfg
        INTERNALERROR>     warnings.warn(CONFIG_INICFG, stacklevel=2)
        INTERNALERROR> pytest.PytestRemovedIn10Warning: config.inicfg is deprecated
        """
    )
    assert pairs(diagnose(log)) == [("step_back", "pytest"), ("step_back", "pytest-formatcheck")]


def test_the_projects_own_attribute_error_is_not_a_release_to_step_back(tmp_path: Path) -> None:
    # pytest's import machinery is on the stack, but the error is raised in the project's code.
    root = project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "src_mod.py": "value = None\n",
            "tests/test_a.py": "import src_mod\n\nsrc_mod.value.missing\n\n\ndef test_a():\n    pass\n",
            "conftest.py": "import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\n",
        },
    )
    output = pytest_output(root)
    assert "AttributeError: 'NoneType' object has no attribute 'missing'" in output
    assert diagnose(output) == []


def test_a_name_a_dependency_no_longer_has_steps_it_back_only_when_installed() -> None:
    installed = (
        "ImportError: cannot import name 'soft_unicode' from 'markupsafe' "
        "(/venv/lib/python3.11/site-packages/markupsafe/__init__.py)"
    )
    assert pairs(diagnose(installed)) == [("step_back", "markupsafe")]


# -- pytest plugins -------------------------------------------------------------------------------------


def test_plugins_from_a_real_pytest_run(plugins_project: Path) -> None:
    output = pytest_output(plugins_project)
    for message in (
        "fixture 'mocker' not found",
        "async def functions are not natively supported",
        "Unknown pytest.mark.asyncio",
        "Unknown config option: asyncio_mode",
        "Unknown config option: timeout",
        "Unknown config option: env",
    ):
        assert message in output
    assert pairs(diagnose(output)) == [
        ("install", "pytest-mock"),
        ("install", "pytest-asyncio"),
        ("install", "pytest-env"),
        ("install", "pytest-timeout"),
    ]


def test_strict_markers_and_strict_config_from_real_runs(plugins_project: Path) -> None:
    strict_markers = pytest_output(plugins_project, "--strict-markers")
    assert "'asyncio' not found in `markers` configuration option" in strict_markers
    assert ("install", "pytest-asyncio") in pairs(diagnose(strict_markers))
    strict_config = pytest_output(plugins_project, "--strict-config")
    assert "ERROR: Unknown config option: asyncio_mode" in strict_config
    assert pairs(diagnose(strict_config)) == [("install", "pytest-asyncio")]


def test_unrecognized_arguments_from_a_real_run(plugins_project: Path) -> None:
    output = pytest_output(plugins_project, "--cov=src", "--cov-report=term", "-n", "4", "--timeout", "30")
    assert "error: unrecognized arguments: --cov=src --cov-report=term -n" in output
    assert pairs(diagnose(output)) == [
        ("install", "pytest-cov"),
        ("install", "pytest-xdist"),
        ("install", "pytest-timeout"),
    ]


@pytest.mark.parametrize(
    ("arguments", "plugin"),
    [
        ("--reruns 3 --reruns-delay 1", "pytest-rerunfailures"),
        ("--benchmark-skip", "pytest-benchmark"),
        ("--mypy", "pytest-mypy"),
        ("--html=report.html --self-contained-html", "pytest-html"),
        ("--numprocesses=auto", "pytest-xdist"),
    ],
)
def test_unrecognized_arguments_map_to_plugins(arguments: str, plugin: str) -> None:
    log = f"pytest: error: unrecognized arguments: {arguments}\n  inifile: /repo/pytest.ini\n"
    assert pairs(diagnose(log)) == [("install", plugin)]


def test_missing_required_plugins_from_a_real_run(tmp_path: Path) -> None:
    ini = "[pytest]\nrequired_plugins = pytest-asyncio pytest-cov>=4\n"
    output = pytest_output(project(tmp_path, {"pytest.ini": ini, "test_a.py": "def test_a():\n    pass\n"}))
    assert "Missing required plugins: pytest-asyncio, pytest-cov>=4" in output
    assert pairs(diagnose(output)) == [("install", "pytest-asyncio"), ("install", "pytest-cov>=4")]


@pytest.mark.parametrize(
    ("fixture", "plugin"),
    [
        ("benchmark", "pytest-benchmark"),
        ("httpserver", "pytest-httpserver"),
        ("freezer", "pytest-freezer"),
        ("aiohttp_client", "pytest-aiohttp"),
        ("loop", "pytest-aiohttp"),
        ("event_loop", "pytest-asyncio"),
        ("datadir", "pytest-datadir"),
        ("shared_datadir", "pytest-datadir"),
        ("snapshot", "syrupy"),
        ("requests_mock", "requests-mock"),
        ("respx_mock", "respx"),
        ("httpx_mock", "pytest-httpx"),
        ("celery_app", "celery[pytest]"),
        ("django_db", "pytest-django"),
        ("client", "pytest-django"),
        ("rf", "pytest-django"),
        ("settings", "pytest-django"),
        ("qtbot", "pytest-qt"),
        ("lazy_fixture", "pytest-lazy-fixture"),
    ],
)
def test_fixtures_map_to_plugins(fixture: str, plugin: str) -> None:
    assert pairs(diagnose(f"E       fixture '{fixture}' not found")) == [("install", plugin)]


@pytest.mark.parametrize("fixture", ["caplog", "capsys", "tmp_path", "mock", "my_own_fixture"])
def test_builtin_and_unknown_fixtures_install_nothing(fixture: str) -> None:
    assert diagnose(f"E       fixture '{fixture}' not found") == []


# -- versioning plugins ---------------------------------------------------------------------------------

SETUPTOOLS_SCM = excerpt(
    """
      × Getting requirements to build editable did not run successfully.
      │ exit code: 1
      ╰─> [42 lines of output]
          Traceback (most recent call last):
          ...
            File "/tmp/pip-build-env-9hoqqe1d/overlay/lib/python3.11/site-packages/vcs_versioning/_get_version_impl.py", line 306, in _version_missing
              raise LookupError(error_msg)
          LookupError: setuptools-scm was unable to detect version for /repo.

          Make sure you're either building from a fully intact git repository or PyPI tarballs. Most other sources (such as GitHub's tarballs, a git checkout without the .git folder) don't contain the necessary metadata and will not work.
          [end of output]

      note: This error originates from a subprocess, and is likely not a problem with pip.
    ERROR: Failed to build 'file:///repo' when getting requirements to build editable
    """  # noqa: E501
)


@pytest.mark.parametrize(
    "log",
    [
        SETUPTOOLS_SCM,
        "LookupError: setuptools-scm was unable to detect version for '/repo'.\n",
        "LookupError: Error getting the version from source `vcs`: setuptools-scm was unable to detect "
        "version for /repo.\n",
    ],
)
def test_setuptools_scm_and_hatch_vcs_get_a_pretend_version(log: str) -> None:
    assert pairs(diagnose(log, version="2.4.1", extras=("test",))) == [
        ("env", "SETUPTOOLS_SCM_PRETEND_VERSION=2.4.1")
    ]
    assert pairs(diagnose(log)) == [("env", "SETUPTOOLS_SCM_PRETEND_VERSION=0.0.0")]


def test_pbr_gets_a_pretend_version() -> None:
    log = excerpt(
        """
        error: Failed to build `pbrproj @ file:///repo`
          cause: The build backend returned an error
                 Exception: Versioning for this project requires either an sdist tarball, or access to an upstream git repository. It's also possible that there is a mismatch between the package name in setup.cfg and the argument given to pbr.version.VersionInfo. Project name pbrproj was given, but was not able to be found.
        """  # noqa: E501
    )
    assert pairs(diagnose(log, version="1.0")) == [("env", "PBR_VERSION=1.0")]


def test_a_missing_version_control_system_is_not_setuptools_scm() -> None:
    assert diagnose("RuntimeError: Unable to detect version control system. Checked: Git.") == []


# -- pip and uv: versions that do not exist -------------------------------------------------------------

PIP_NO_VERSION = excerpt(
    """
    ERROR: Could not find a version that satisfies the requirement oldpkg==0.9 (from versions: 1.0)
    ERROR: No matching distribution found for oldpkg==0.9
    """
)


@pytest.mark.parametrize(
    ("log", "requirement"),
    [
        (PIP_NO_VERSION, "oldpkg==0.9"),
        ("ERROR: No matching distribution found for numpy==1.19.5\n", "numpy==1.19.5"),
        (
            "error: No solution found when resolving dependencies\n"
            "  cause: Because there is no version of oldpkg==0.9 and you require oldpkg==0.9, "
            "we can conclude that your requirements are unsatisfiable.",
            "oldpkg==0.9",
        ),
        (
            "error: No solution found when resolving dependencies\n"
            "  cause: Because only oldpkg==1.0 is available and you require oldpkg>=2,<3, "
            "we can conclude that your requirements are unsatisfiable.",
            "oldpkg>=2,<3",
        ),
    ],
)
def test_unsatisfiable_pins_are_relaxed(log: str, requirement: str) -> None:
    repairs = diagnose(log)
    assert pairs(repairs) == [("relax_pins", requirement)]
    assert requirement in repairs[0].why


@pytest.mark.parametrize(
    "log",
    [
        # pip: no version of the name at all, so no pin is to blame.
        "ERROR: Could not find a version that satisfies the requirement nonexistent-pkg==1.0 (from versions: "
        "none)\nERROR: No matching distribution found for nonexistent-pkg==1.0\n",
        # uv: the same.
        "error: No solution found when resolving dependencies\n"
        "  cause: Because nonexistent-pkg was not found in the package registry and you require "
        "nonexistent-pkg==1.0, we can conclude that your requirements are unsatisfiable.\n",
        # uv: a dependency's own pin conflicts; the project's requirement is not pinned.
        "  cause: Because only oldpkg==1.0 is available and needsold==0.1 depends on oldpkg<1, we can "
        "conclude that needsold==0.1 cannot be used.\n         And because only needsold==0.1 is available "
        "and you require needsold, we can conclude that your requirements are unsatisfiable.\n",
    ],
)
def test_relaxing_is_not_offered_when_it_cannot_help(log: str) -> None:
    assert diagnose(log) == []


# -- pip and uv: builds that fail -----------------------------------------------------------------------

PIP23_PINNED_BUILD = excerpt(
    """
    Collecting oldpkg==1.0 (from -r requirements.txt (line 1))
      Downloading oldpkg-1.0.tar.gz (263 bytes)
      Installing build dependencies: started
      Installing build dependencies: finished with status 'done'
      Getting requirements to build wheel: started
      Getting requirements to build wheel: finished with status 'done'
      Preparing metadata (pyproject.toml): started
      Preparing metadata (pyproject.toml): finished with status 'done'
    Building wheels for collected packages: oldpkg
      Building wheel for oldpkg (pyproject.toml): started
      Building wheel for oldpkg (pyproject.toml): finished with status 'error'
      error: subprocess-exited-with-error

      × Building wheel for oldpkg (pyproject.toml) did not run successfully.
      │ exit code: 1
      ╰─> [8 lines of output]
          running bdist_wheel
          running build_ext
          building 'oldpkg._speedups' extension
          cc1: fatal error: src/missing.c: No such file or directory
          compilation terminated.
          [end of output]

      note: This error originates from a subprocess, and is likely not a problem with pip.
      ERROR: Failed building wheel for oldpkg
    Failed to build oldpkg
    ERROR: Could not build wheels for oldpkg, which is required to install pyproject.toml-based projects
    """
)

PIP26_PINNED_BUILD_TAIL = excerpt(
    """
      note: This error originates from a subprocess, and is likely not a problem with pip.
      ERROR: Failed building wheel for oldpkg
    Failed to build oldpkg
    error: failed-wheel-build-for-install

    × Failed to build installable wheels for some pyproject.toml based projects
    ╰─> oldpkg
    """
)

UV_PINNED_BUILD = excerpt(
    """
    Resolved 1 package in 394ms
       Building oldpkg==1.0
    error: Failed to build `oldpkg==1.0`
      cause: The build backend returned an error
      cause: Call to `setuptools.build_meta:__legacy__.build_wheel` failed (exit status: 1)

             [stderr]
             cc1: fatal error: src/missing.c: No such file or directory
             compilation terminated.

    hint: Build failures usually indicate a problem with the package or the build environment
    """
)


@pytest.mark.parametrize(
    "log",
    [
        PIP23_PINNED_BUILD,
        PIP23_PINNED_BUILD.split("Building wheels for")[0] + PIP26_PINNED_BUILD_TAIL,
        UV_PINNED_BUILD,
    ],
)
def test_failed_build_of_a_pinned_dependency_relaxes_then_drops_extras_last_first(log: str) -> None:
    assert pairs(diagnose(log, extras=("test", "docs"))) == [
        ("relax_pins", "oldpkg==1.0"),
        ("drop_extra", "docs"),
        ("drop_extra", "test"),
    ]


METADATA_FAILURE = excerpt(
    """
    Collecting oldmeta==1.0
      Downloading oldmeta-1.0.tar.gz (295 bytes)
      Installing build dependencies: started
      Installing build dependencies: finished with status 'done'
      Getting requirements to build wheel: started
      Getting requirements to build wheel: finished with status 'error'
      error: subprocess-exited-with-error

      × Getting requirements to build wheel did not run successfully.
      │ exit code: 1
      ╰─> [21 lines of output]
          Traceback (most recent call last):
            File "<string>", line 4, in <module>
          RuntimeError: Python version >= 3.10 required to be < 3.10 (simulated old pin)
          [end of output]

      note: This error originates from a subprocess, and is likely not a problem with pip.
    """
)


@pytest.mark.parametrize(
    "log",
    [
        METADATA_FAILURE + "error: subprocess-exited-with-error\n",  # pip 23
        METADATA_FAILURE
        + "ERROR: Failed to build 'oldmeta' when getting requirements to build wheel\n",  # 26
        "error: Failed to build `oldmeta==1.0`\n  cause: The build backend returned an error\n",
        # pip before 23.1 installing a setup.py project without the wheel package.
        "Collecting oldmeta==1.0\n  Using cached oldmeta-1.0.tar.gz (295 bytes)\n"
        "  Running setup.py install for oldmeta: finished with status 'error'\n"
        "  × Running setup.py install for oldmeta did not run successfully.\n",
    ],
)
def test_failed_metadata_of_a_pinned_dependency_relaxes_it(log: str) -> None:
    assert pairs(diagnose(log)) == [("relax_pins", "oldmeta==1.0")]


PIP23_EDITABLE = excerpt(
    """
    Obtaining file:///repo
      Checking if build backend supports build_editable: started
      Checking if build backend supports build_editable: finished with status 'done'
      Getting requirements to build editable: started
      Getting requirements to build editable: finished with status 'done'
      Preparing editable metadata (pyproject.toml): started
      Preparing editable metadata (pyproject.toml): finished with status 'done'
    Building wheels for collected packages: badedit
      Building editable for badedit (pyproject.toml): started
      Building editable for badedit (pyproject.toml): finished with status 'error'
      error: subprocess-exited-with-error

      × Building editable for badedit (pyproject.toml) did not run successfully.
      │ exit code: 1
      ╰─> [12 lines of output]
          RuntimeError: editable install is not supported by this old backend
          [end of output]

      note: This error originates from a subprocess, and is likely not a problem with pip.
      ERROR: Failed building editable for badedit
    Failed to build badedit
    ERROR: Could not build wheels for badedit, which is required to install pyproject.toml-based projects
    """
)


@pytest.mark.parametrize(
    ("log", "project"),
    [
        (PIP23_EDITABLE, "badedit"),
        (
            "error: Failed to build `badedit @ file:///repo`\n  cause: The build backend returned an error\n"
            "  cause: Call to `backend.build_editable` failed (exit status: 1)\n",
            "badedit",
        ),
        (
            "Obtaining file:///repo\n"
            "ERROR: Project file:///repo has a 'pyproject.toml' and its build backend is missing the "
            "'build_editable' hook. Since it does not have a 'setup.py' nor a 'setup.cfg', it cannot be "
            "installed in editable mode. Consider using a build backend that supports PEP 660.\n",
            "file:///repo",
        ),
        (
            "Obtaining file:///repo\n"
            "ERROR: Project file:///repo uses a build backend that is missing the 'build_editable' hook, "
            "so it cannot be installed in editable mode. "
            "Consider using a build backend that supports PEP 660.\n",
            "file:///repo",
        ),
        (
            "   Building file:///repo\nerror: The build backend returned an error\n"
            "  cause: Call to `backend.build_editable` failed (exit status: 1)\n",
            "file:///repo",
        ),
    ],
)
def test_failed_editable_build_of_the_project_installs_it_without_e(log: str, project: str) -> None:
    # The project's own build: its extras are not to blame.
    assert pairs(diagnose(log, extras=("test",))) == [("no_editable", project)]


PIP23_BUILD_NEEDS_NUMPY = excerpt(
    """
    Processing /repo
      Installing build dependencies: started
      Installing build dependencies: finished with status 'done'
      Getting requirements to build wheel: started
      Getting requirements to build wheel: finished with status 'error'
      error: subprocess-exited-with-error

      × Getting requirements to build wheel did not run successfully.
      │ exit code: 1
      ╰─> [21 lines of output]
          Traceback (most recent call last):
            File "<string>", line 1, in <module>
          ModuleNotFoundError: No module named 'numpy'
          [end of output]

      note: This error originates from a subprocess, and is likely not a problem with pip.
    error: subprocess-exited-with-error
    """
)

PIP26_NO_SETUPTOOLS = excerpt(
    """
    Processing /repo
      Getting requirements to build wheel: started
      Getting requirements to build wheel: finished with status 'done'
      error: backend-unavailable

      × Cannot import build backend 'setuptools.build_meta'.
      ╰─> ModuleNotFoundError: No module named 'setuptools'

      note: This is likely not a problem with pip.
    ERROR: Failed to build 'file:///repo' when calling build backend hook get_requires_for_build_wheel
    """
)

PIP23_NO_SETUPTOOLS = excerpt(
    """
    pip._vendor.pyproject_hooks._impl.BackendUnavailable: Traceback (most recent call last):
      File "/venv/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 77, in _build_backend
        obj = import_module(mod_path)
              ^^^^^^^^^^^^^^^^^^^^^^^
    ModuleNotFoundError: No module named 'setuptools'
    """  # noqa: E501
)

UV_BUILD_NEEDS_CYTHON = excerpt(
    """
    error: The build backend returned an error
      cause: Call to `setuptools.build_meta:__legacy__.get_requires_for_build_wheel` failed (exit status: 1)

             [stderr]
             Traceback (most recent call last):
               File "<string>", line 1, in <module>
             ModuleNotFoundError: No module named 'Cython'
    """
)


@pytest.mark.parametrize(
    ("log", "distribution"),
    [
        (PIP23_BUILD_NEEDS_NUMPY, "numpy"),
        (PIP26_NO_SETUPTOOLS, "setuptools"),
        (PIP23_NO_SETUPTOOLS, "setuptools"),
        (UV_BUILD_NEEDS_CYTHON, "Cython"),
    ],
)
def test_module_missing_in_a_build_backend_builds_without_isolation(log: str, distribution: str) -> None:
    assert pairs(diagnose(log, extras=("test",))) == [
        ("no_build_isolation", distribution),
        ("install", distribution),
    ]


@pytest.mark.parametrize(
    ("log", "extras", "dropped"),
    [
        ("WARNING: extraproj 0.1 does not provide the extra 'nope'\n", ("test", "nope"), ["nope"]),
        ("WARNING: extraproj 0.1 does not provide the extra 'dev-tools'\n", ("Dev_Tools",), ["Dev_Tools"]),
        ("WARNING: extraproj 0.1 does not provide the extra 'nope'\n", (), ["nope"]),
        (
            "warning: The package `extraproj @ file:///repo` does not have an extra named `nope`\n",
            ("nope",),
            ["nope"],
        ),
        # A dependency's extra, not one the project asked for: left alone.
        ("WARNING: requests 2.31.0 does not provide the extra 'socks5'\n", ("test",), []),
    ],
)
def test_extras_the_project_lacks_are_dropped(log: str, extras: tuple[str, ...], dropped: list[str]) -> None:
    assert pairs(diagnose(log, extras=extras)) == [("drop_extra", extra) for extra in dropped]


def test_externally_managed_environment_has_no_repair() -> None:
    log = excerpt(
        """
        error: externally-managed-environment

        × This environment is externally managed
        ╰─> To install Python packages system-wide, try apt install
            python3-xyz, where xyz is the package you are trying to
            install.

            If you wish to install a non-Debian-packaged Python package,
            create a virtual environment using python3 -m venv path/to/venv.
            Then use path/to/venv/bin/python and path/to/venv/bin/pip. Make
            sure you have python3-full installed.

        note: If you believe this is a mistake, please contact your Python installation or OS distribution provider. You can override this, at the risk of breaking your Python installation or OS, by passing --break-system-packages.
        hint: See PEP 668 for the detailed specification.
        """  # noqa: E501
    )
    assert diagnose(log) == []


# -- tried, order, why ----------------------------------------------------------------------------------


def test_tried_repairs_are_not_offered_again() -> None:
    log = "E       fixture 'mocker' not found\nModuleNotFoundError: No module named 'yaml'\n"
    assert pairs(diagnose(log)) == [("install", "PyYAML"), ("install", "pytest-mock")]
    tried = [Repair("install", "PyYAML", "an older log line")]
    assert pairs(diagnose(log, tried=tried)) == [("install", "pytest-mock")]


def test_install_mode_switches_are_tried_once_whatever_their_value() -> None:
    tried = [Repair("no_build_isolation", "numpy", "earlier build")]
    assert pairs(diagnose(UV_BUILD_NEEDS_CYTHON, tried=tried)) == [("install", "Cython")]


def test_a_repeated_error_gives_one_repair_with_its_line_as_why() -> None:
    log = "collecting ...\nE   ModuleNotFoundError: No module named 'yaml'\n" * 3
    assert diagnose(log) == [
        Repair("install", "PyYAML", "E   ModuleNotFoundError: No module named 'yaml'"),
    ]


def test_why_is_shortened() -> None:
    line = "E       fixture 'mocker' not found" + " (context)" * 50
    (repair,) = diagnose(line)
    assert len(repair.why) == WHY_LENGTH
    assert repair.why.startswith("E       fixture 'mocker' not found") and repair.why.endswith("…")


def test_colour_codes_do_not_hide_errors() -> None:
    log = "\x1b[1m\x1b[31mE   ModuleNotFoundError\x1b[0m: No module named 'yaml'\n"
    assert pairs(diagnose(log)) == [("install", "PyYAML")]


# -- import map -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "distribution"),
    [
        ("yaml", "PyYAML"),
        ("PIL", "Pillow"),
        ("cv2", "opencv-python-headless"),
        ("sklearn", "scikit-learn"),
        ("skimage", "scikit-image"),
        ("bs4", "beautifulsoup4"),
        ("dateutil", "python-dateutil"),
        ("attr", "attrs"),
        ("jwt", "PyJWT"),
        ("Crypto", "pycryptodome"),
        ("OpenSSL", "pyOpenSSL"),
        ("serial", "pyserial"),
        ("usb", "pyusb"),
        ("git", "GitPython"),
        ("magic", "python-magic"),
        ("docx", "python-docx"),
        ("pptx", "python-pptx"),
        ("dotenv", "python-dotenv"),
        ("jose", "python-jose"),
        ("multipart", "python-multipart"),
        ("slugify", "python-slugify"),
        ("Levenshtein", "python-Levenshtein"),
        ("zmq", "pyzmq"),
        ("lxml", "lxml"),
        ("markdown", "Markdown"),
        ("jinja2", "Jinja2"),
        ("mpl_toolkits", "matplotlib"),
        ("pkg_resources", "setuptools"),
        ("_pytest", "pytest"),
        ("tomli_w", "tomli-w"),
        ("typing_extensions", "typing-extensions"),
    ],
)
def test_well_known_import_names(module: str, distribution: str) -> None:
    assert distribution_for(module) == distribution


@pytest.mark.parametrize(
    ("module", "distribution"),
    [
        ("google.protobuf.message", "protobuf"),
        ("google.cloud.storage", "google-cloud-storage"),
        ("google.cloud.storage.blob", "google-cloud-storage"),
        ("google.cloud.pubsub_v1", "google-cloud-pubsub"),
        ("google.cloud.secretmanager_v1", "google-cloud-secret-manager"),
        ("google.cloud.exceptions", "google-cloud-core"),
        ("google.auth.transport", "google-auth"),
        ("azure.storage.blob.aio", "azure-storage-blob"),
        ("azure.identity", "azure-identity"),
        ("zope.interface", "zope-interface"),
        ("mpl_toolkits.basemap", "basemap"),
        ("mpl_toolkits.mplot3d", "matplotlib"),
        ("ruamel.yaml.comments", "ruamel.yaml"),
    ],
)
def test_dotted_names_longest_prefix_first_then_namespaces(module: str, distribution: str) -> None:
    assert distribution_for(module) == distribution


def test_unknown_names_are_guessed_and_stdlib_is_none() -> None:
    assert distribution_for("pytest_cov") == "pytest-cov"
    assert distribution_for("some_pkg.sub.mod") == "some-pkg"
    assert distribution_for("json") is None
    assert distribution_for("xml.etree.ElementTree") is None
    assert distribution_for("annotationlib") is None  # standard library from Python 3.14
    assert distribution_for("imghdr") == "standard-imghdr"  # removed from the standard library in 3.13


def test_the_map_is_substantial() -> None:
    assert len(DISTRIBUTIONS) >= 150
