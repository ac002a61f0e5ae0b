"""Installed releases too old for the interpreter: reading their errors, choosing the release to step to.

The tracebacks are real: small installed-looking packages (a ``site-packages`` folder) that use names
Python 3.11 removed, imported by this interpreter directly, by pytest's collection and by a conftest.
Errors 3.11 cannot produce (``No module named 'imp'`` is 3.12's) and the tracebacks of old pytest and py
releases are excerpts of real runs, paths shortened. The index is a PEP 691 index over loopback HTTP.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from images.baseline import judge, runner_crash
from images.forward_repair import ERROR, choose_release, forward_step, interpreter_change, releases
from images.recipe import RecipeStep
from images.repair import Repair, diagnose
from images.suite_runs import Execution, RunSettings, run_baseline
from tests.repos import run_pytest
from tests.repos import write as project

SITE = "env/lib/python3.11/site-packages"


def pairs(repairs: list[Repair]) -> list[tuple[str, str]]:
    return [(repair.kind, repair.value) for repair in repairs]


def installed(root: Path, package: str, code: str) -> Path:
    """``package`` with ``code`` as its ``__init__``, in a site-packages folder under ``root``."""
    return project(root, {f"{SITE}/{package}/__init__.py": code})


def import_output(root: Path, module: str) -> str:
    """What this interpreter prints when importing ``module`` from ``root``'s site-packages fails."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=root,
        env={"PYTHONPATH": str(root / SITE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stderr


# -- reading real errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("from collections import Sequence\n", "cannot import name 'Sequence' from 'collections'"),
        ("import collections\ncollections.Mapping\n", "module 'collections' has no attribute 'Mapping'"),
        ("from inspect import getargspec\n", "ImportError: cannot import name 'getargspec' from 'inspect'"),
        ("import inspect\ninspect.formatargspec\n", "module 'inspect' has no attribute 'formatargspec'"),
        ("import asyncio\n\n@asyncio.coroutine\ndef f():\n    pass\n", "has no attribute 'coroutine'"),
    ],
)
def test_a_removed_standard_library_name_used_by_an_installed_package_steps_it_forward(
    tmp_path: Path, code: str, error: str
) -> None:
    output = import_output(installed(tmp_path, "oldlib", code), "oldlib")
    assert error in output
    repairs = diagnose(output)
    assert pairs(repairs)[0] == ("step_forward", "oldlib")
    assert repairs[0].why.startswith(("ImportError: ", "AttributeError: "))


def test_the_failing_frame_decides_which_distribution_steps_forward(tmp_path: Path) -> None:
    root = installed(tmp_path, "newapp", "import oldlib\n")
    installed(root, "oldlib", "from collections import Sequence\n")
    output = import_output(root, "newapp")
    # newapp's frame is outer, oldlib's innermost: oldlib is the one too old.
    assert pairs(diagnose(output)) == [("step_forward", "oldlib")]


def test_a_project_dependency_failing_in_pytest_collection_steps_forward(tmp_path: Path) -> None:
    root = installed(tmp_path, "oldlib", "from collections import Mapping\n")
    project(
        root,
        {
            "pytest.ini": f"[pytest]\npythonpath = {SITE}\n",
            "tests/test_a.py": "import oldlib\n\n\ndef test_a():\n    pass\n",
        },
    )
    done = run_pytest(root, "--collect-only", "-q")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "E   ImportError: cannot import name 'Mapping'" in output
    assert pairs(diagnose(output))[0] == ("step_forward", "oldlib")


def test_a_conftest_import_failing_in_an_installed_package_steps_it_forward(tmp_path: Path) -> None:
    root = installed(tmp_path, "pytest_oldplugin", "import inspect\ninspect.getargspec\n")
    ini = f"[pytest]\npythonpath = {SITE}\n"
    project(root, {"pytest.ini": ini, "conftest.py": "import pytest_oldplugin\n"})
    done = run_pytest(root, "--collect-only", "-q")
    output = done.stdout + done.stderr
    assert "ImportError while loading conftest" in output
    assert "AttributeError: module 'inspect' has no attribute 'getargspec'" in output
    repairs = pairs(diagnose(output))
    assert repairs[0] == ("step_forward", "pytest-oldplugin")
    assert ("step_back", "pytest") not in repairs, "a name the interpreter lost is not pytest's to step back"


def test_the_projects_own_code_using_a_removed_name_steps_nothing_forward(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        {"oldcode.py": "from collections import Sequence\n", "tests/test_a.py": "import oldcode\n"},
    )
    done = run_pytest(root, "--collect-only", "-q")
    output = done.stdout + done.stderr
    assert "cannot import name 'Sequence' from 'collections'" in output
    assert "step_forward" not in [kind for kind, _ in pairs(diagnose(output))]


def test_a_name_missing_from_another_installed_package_is_not_the_interpreters(tmp_path: Path) -> None:
    root = installed(tmp_path, "newlib", "absent = None\n")
    installed(root, "oldlib", "from newlib import present\n")
    output = import_output(root, "oldlib")
    assert "cannot import name 'present' from 'newlib'" in output
    assert pairs(diagnose(output)) == [("step_back", "newlib")]


#: pytest 3.5.1 and py 1.8.0 on Python 3.11, from the build of pyflakes at a 2019 commit.
PY_SPEC = """\
$ python -m pytest -p no:cacheprovider --collect-only -q
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/py/_vendored_packages/apipkg.py", line 141, in __makeattr
    modpath, attrname = self.__map__[name]
                        ~~~~~~~~~~~~^^^^^^
KeyError: '__spec__'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "<frozen runpy>", line 88, in _run_code
  File "/venv/lib/python3.11/site-packages/pytest.py", line 13, in <module>
    from _pytest.fixtures import fixture, yield_fixture
  File "/venv/lib/python3.11/site-packages/_pytest/fixtures.py", line 11, in <module>
    from py._code.code import FormattedExcinfo
  File "<frozen importlib._bootstrap>", line 1178, in _find_and_load
  File "<frozen importlib._bootstrap>", line 1138, in _find_and_load_unlocked
  File "/venv/lib/python3.11/site-packages/py/_vendored_packages/apipkg.py", line 146, in __makeattr
    raise AttributeError(name)
AttributeError: __spec__
"""
PYTEST_SEQUENCE = """\
$ python -m pytest -p no:cacheprovider --collect-only -q
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "<frozen runpy>", line 88, in _run_code
  File "/venv/lib/python3.11/site-packages/pytest.py", line 9, in <module>
    from _pytest.config import (
  File "/venv/lib/python3.11/site-packages/_pytest/config.py", line 18, in <module>
    import _pytest.assertion
  File "/venv/lib/python3.11/site-packages/_pytest/assertion/__init__.py", line 8, in <module>
    from _pytest.assertion import util
  File "/venv/lib/python3.11/site-packages/_pytest/assertion/util.py", line 8, in <module>
    from collections import Sequence
ImportError: cannot import name 'Sequence' from 'collections' (/usr/lib/python3.11/collections/__init__.py)
"""
#: pytest 4.4.1 with py 1.11.0 on Python 3.11: its assertion rewriting builds an AST 3.10 rejects.
PYTEST_AST = """\
==================================== ERRORS ====================================
__________________________ ERROR collecting test_a.py __________________________
<frozen importlib._bootstrap>:1072: in _find_spec
    ???
E   AttributeError: 'AssertionRewritingHook' object has no attribute 'find_spec'

During handling of the above exception, another exception occurred:
/venv/lib/python3.11/site-packages/py/_path/local.py:704: in pyimport
    __import__(modname)
<frozen importlib._bootstrap>:1176: in _find_and_load
    ???
<frozen importlib._bootstrap>:1048: in _find_spec_legacy
    ???
/venv/lib/python3.11/site-packages/_pytest/assertion/rewrite.py:166: in find_module
    source_stat, co = _rewrite_test(self.config, fn_pypath)
/venv/lib/python3.11/site-packages/_pytest/assertion/rewrite.py:419: in _rewrite_test
    co = compile(tree, fn.strpath, "exec", dont_inherit=True)
E   TypeError: required field "lineno" missing from alias
!!!!!!!!!!!!!!!!!!! Interrupted: 1 errors during collection !!!!!!!!!!!!!!!!!!!!
"""
#: Python 3.12's wording for a module it removed, raised in an installed plugin.
NO_IMP = """\
ImportError while loading conftest '/repo/conftest.py'.
conftest.py:1: in <module>
    import pytest_legacy
/venv/lib/python3.12/site-packages/pytest_legacy/__init__.py:2: in <module>
    import imp
E   ModuleNotFoundError: No module named 'imp'
"""


def test_py_without_spec_on_a_newer_interpreter_steps_py_forward_and_nothing_back() -> None:
    assert pairs(diagnose(PY_SPEC)) == [("step_forward", "py")]


def test_pytest_using_a_removed_collections_alias_steps_pytest_forward() -> None:
    assert pairs(diagnose(PYTEST_SEQUENCE)) == [("step_forward", "pytest")]


def test_an_ast_the_interpreter_rejects_steps_the_release_that_built_it_forward(index: str) -> None:
    repair = diagnose(PYTEST_AST)[0]
    assert (repair.kind, repair.value) == ("step_forward", "pytest")
    step = forward_step("pytest", "4.4.1", "3.11.2", repair.why, index_url=index)
    assert isinstance(step, RecipeStep)
    assert step.why.startswith('repair: TypeError: required field "lineno" missing from alias (the AST ')


def test_a_removed_module_steps_the_plugin_forward_before_installing_a_backport() -> None:
    assert pairs(diagnose(NO_IMP)) == [("step_forward", "pytest-legacy"), ("install", "zombie-imp")]


@pytest.mark.parametrize(
    "line",
    [
        "ImportError: cannot import name 'thing' from 'requests' (/venv/lib/python3.11/site-packages/x.py)",
        "AttributeError: module 'numpy' has no attribute 'float'",
        "ModuleNotFoundError: No module named 'yaml'",
    ],
)
def test_errors_a_newer_interpreter_does_not_explain(line: str) -> None:
    match = ERROR.search(line)
    assert match is not None and interpreter_change(match) is None


# -- choosing the release -------------------------------------------------------------------------------


def _file(name: str, version: str, uploaded: str, requires: str | None = None, yanked: bool = False) -> dict:
    return {
        "filename": f"{name}-{version}-py3-none-any.whl",
        "url": f"../../files/{name}-{version}-py3-none-any.whl",
        "hashes": {},
        "requires-python": requires,
        "upload-time": uploaded,
        "yanked": yanked,
    }


PAGES = {
    "pytest": [
        _file("pytest", "3.5.0", "2018-03-22T00:00:00.000000Z"),
        _file("pytest", "3.5.1", "2018-04-23T00:00:00.000000Z"),
        _file("pytest", "6.2.5", "2021-08-29T00:00:00.000000Z", ">=3.6"),
        _file("pytest", "7.1.3", "2022-09-04T00:00:00.000000Z", ">=3.7"),
        _file("pytest", "7.2.0rc1", "2022-10-20T00:00:00.000000Z", ">=3.7"),
        _file("pytest", "7.2.0", "2022-10-25T16:51:05.000000Z", ">=3.7"),
        _file("pytest", "7.2.1", "2023-01-13T00:00:00.000000Z", ">=3.7"),
        _file("pytest", "8.0.0", "2024-01-27T00:00:00.000000Z", ">=3.8"),
    ],
    # No release after 3.11 came out; the last one that admits 3.11 is 1.10.0.
    "py": [
        _file("py", "1.8.0", "2019-02-21T00:00:00.000000Z"),
        _file("py", "1.10.0", "2020-12-12T00:00:00.000000Z", ">=2.7"),
        _file("py", "1.11.0", "2021-11-04T00:00:00.000000Z", "<3.11"),
        _file("py", "1.12.0", "2022-11-01T00:00:00.000000Z", ">=3.7", yanked=True),
    ],
}


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        name = self.path.strip("/").split("/")[-1]
        if self.path.startswith("/html/"):
            body, kind = b"<html><body></body></html>", "text/html"
        elif name in PAGES:
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": PAGES[name]}).encode()
            kind = "application/vnd.pypi.simple.v1+json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def test_the_first_release_after_the_interpreter_came_out_is_chosen(index: str) -> None:
    step = forward_step("pytest", "3.5.1", "3.11.2", PYTEST_SEQUENCE.splitlines()[-1], index_url=index)
    assert isinstance(step, RecipeStep)
    assert step.run == "uv pip install --exclude-newer 2022-10-26T16:51:05Z pytest==7.2.0"
    assert "collections.Sequence is gone from the standard library" in step.why
    assert "pytest 3.5.1 predates Python 3.11: stepping forward to 7.2.0, its first release after" in step.why


def test_without_a_release_after_the_interpreter_the_newest_that_admits_it_is_chosen(index: str) -> None:
    step = forward_step("py", "1.8.0", "3.11.2", "AttributeError: __spec__", index_url=index)
    assert isinstance(step, RecipeStep)
    assert step.run == "uv pip install --exclude-newer 2020-12-13T00:00:00Z py==1.10.0"
    assert "stepping forward to 1.10.0, its newest release" in step.why


def test_on_a_line_pytest_never_saw_its_newest_release_is_chosen(index: str) -> None:
    chosen = choose_release(releases({"files": PAGES["pytest"]}, "pytest"), "7.2.0", "3.99")
    assert chosen is not None and str(chosen.version) == "8.0.0"


@pytest.mark.parametrize(
    ("distribution", "installed", "index_path", "message"),
    [
        ("pytest", "8.0.0", "simple", "pytest has no release newer than 8.0.0 that runs on Python 3.11.2"),
        ("pytest", None, "simple", "pytest is not installed: nothing to step forward"),
        ("nosuchdist", "1.0", "simple", "cannot step nosuchdist forward: "),
        ("pytest", "3.5.1", "html", "gives no JSON page (PEP 691)"),
    ],
)
def test_no_release_to_step_to_is_a_sentence_for_the_log(
    index: str, distribution: str, installed: str | None, index_path: str, message: str
) -> None:
    url = index.replace("/simple", f"/{index_path}")
    answer = forward_step(distribution, installed, "3.11.2", "AttributeError: __spec__", index_url=url)
    assert isinstance(answer, str) and message in answer


# -- when nothing repairs it: a precise failure class ---------------------------------------------------


def test_a_test_runner_dying_at_import_is_test_runner_broken_with_its_line_quoted(tmp_path: Path) -> None:
    root = installed(tmp_path, "oldrunner", "from collections import Sequence\n")
    done = subprocess.run(
        [sys.executable, "-m", "oldrunner"],
        cwd=root,
        env={"PYTHONPATH": str(root / SITE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    crash = runner_crash(done.stdout + done.stderr)
    assert crash is not None and crash.startswith("ImportError: cannot import name 'Sequence' from 'collec")
    verdict = judge(None, exit_code=done.returncode, timed_out=False, crash=crash)
    assert verdict.failure_class == "test_runner_broken"
    assert crash in verdict.reason
    assert runner_crash(PY_SPEC) == "AttributeError: __spec__", "the last traceback's own line"


def test_pytests_own_reports_are_not_a_crash() -> None:
    assert runner_crash(PYTEST_AST) is None
    assert judge(None, exit_code=1, timed_out=False, crash=None).failure_class == "no_tests"


def test_a_baseline_whose_runs_die_at_import_is_test_runner_broken() -> None:
    crashed = PYTEST_SEQUENCE.split("\n", 1)[1]  # the run's output, without the build log's command line
    result = run_baseline(
        "python -m pytest -p no:cacheprovider",
        RunSettings(limit=60),
        lambda script, number, paths: Execution(1, crashed, {}),
        lambda title, output: None,
    )
    assert result.verdict.failure_class == "test_runner_broken"
    assert "ImportError: cannot import name 'Sequence' from 'collections'" in result.verdict.reason
