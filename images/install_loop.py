"""The install-and-repair loop of a build, run in its build container: each recipe step with the repairs
its log suggests (:func:`run_steps`), test collection until it is clean (:func:`collect`), and the
project's own install kept last (:func:`keep_project_installed`)."""

from __future__ import annotations

import re
import shlex
from datetime import UTC

from packaging.utils import canonicalize_name

from images.build_container import BuildRunner
from images.build_result import BuildFailed, BuildOptions
from images.detect import InstallPlan
from images.forward_repair import forward_step
from images.local_projects import local_modules
from images.native import install_failure
from images.pypi import default_index_url
from images.readers.pytest_config import explicit_test_files
from images.recipe import REPO_DIR, VENV_DIR, RecipeStep
from images.repair import FLAG_KINDS, Repair, diagnose
from images.runners import runner_of
from images.sources import Checkout
from images.steps import PYTEST, first_change, one_package_each, without_install_limits

_CONTINUE = "--continue-on-collection-errors"
_COLLECTED = re.compile(r"^[1-9]\d* tests? collected", re.MULTILINE)


def run_steps(
    run: BuildRunner, steps: list[RecipeStep], plan: InstallPlan, version: str | None, repair_rounds: int
) -> list[RecipeStep]:
    """Run each step; on failure try the repairs its log suggests, up to ``repair_rounds`` times.

    A required step that cannot be repaired fails the build; an optional one (a requirements
    file, extra test tools) is skipped, and the test run shows whether it mattered.
    """
    done: list[RecipeStep] = []
    tried: list[Repair] = []
    switches: dict[str, list[Repair]] = {}
    queue = list(steps)
    rounds = 0
    while queue:
        step = queue.pop(0)
        mark = run.log.size()
        if run(step.why, step.run, step.env) == 0:
            done.append(step)
            continue
        output = run.log.since(mark)
        replacement = None
        if rounds < repair_rounds and _a_locked_version_failed(output, plan.pins, run.env):
            # The lock's own version would not build here (typed-ast 1.4.0 on a newer Python): the lock is
            # at fault, not the extras that the generic repairs would drop next.
            replacement = without_install_limits(step, run.env)
        if replacement is None and rounds < repair_rounds:
            # Extras only mean something to the step that installs the project itself.
            extras = plan.extras if step.required else ()
            # An install-mode switch (no editable build) tried on one step may still be the fix of another
            # (a requirements file's own "-e ."): those count per step, every other repair for the build.
            root = step.why.split(" (repair: ", 1)[0]
            known = [*tried, *switches.get(root, [])]
            looked: list[Repair] = []
            diagnosed = diagnose(output, tried=known, extras=extras, version=version)
            replacement = first_change(diagnosed, step, looked)
            for repair in looked:
                (switches.setdefault(root, []) if repair.kind in FLAG_KINDS else tried).append(repair)
        if replacement is None and rounds < repair_rounds:
            replacement = without_install_limits(step, run.env)
        if replacement is not None:
            rounds += 1
            queue[:0] = replacement
        elif not step.required and (one_by_one := one_package_each(step)):
            run.log.section("installing the packages one by one, to keep those that install")
            queue[:0] = one_by_one
        elif not step.required:
            run.log.section(f"skipped: {step.why} could not be installed")
        else:
            raise BuildFailed(*install_failure(step.why, output, run.log.last_error(mark)))
    return done


_FAILED_BUILD = re.compile(r"Failed to build `(?P<name>[^`=\s]+)==(?P<version>[^`\s]+)`")


def _a_locked_version_failed(output: str, pins: tuple[str, ...], env: dict[str, str]) -> bool:
    """Whether a distribution failed to build at the version the lock file pins for every step."""
    if "UV_CONSTRAINT" not in env:
        return False
    return any(
        f"{canonicalize_name(match['name'])}=={match['version']}" in pins
        for match in _FAILED_BUILD.finditer(output)
    )


def collect(
    run: BuildRunner,
    steps: list[RecipeStep],
    test_command: str,
    checkout: Checkout,
    plan: InstallPlan,
    options: BuildOptions,
) -> tuple[list[RecipeStep], str]:
    """Collect the tests, installing what collection says is missing, until it is clean.

    Returns the steps (with any installs added) and the test command, which names the test files
    explicitly when pytest's default file pattern finds none.
    """
    if runner_of(test_command) != "pytest":
        return steps, test_command  # only pytest collects without running; the baseline shows the rest
    tried: list[Repair] = []
    named_files = False
    local = local_modules(checkout.path)
    for _ in range(options.repair_rounds):
        mark = run.log.size()
        code = run("collect tests", f"{test_command} --collect-only -q", {})
        output = run.log.since(mark)
        if code == 5 and not named_files and (files := explicit_test_files(checkout.path, plan.test_paths)):
            named_files = True
            run.log.section("no file matched pytest's test_*.py pattern: naming the test files instead")
            test_command = " ".join([PYTEST, *map(shlex.quote, plan.pytest_args), *map(shlex.quote, files)])
            continue
        if code in (0, 5):  # 5: nothing collected; the baseline reports it as no_tests
            break
        repairs = diagnose(output, tried=tried, version=checkout.version, local=local)
        repairs = [r for r in repairs if r.kind in ("install", "step_back", "step_forward", "build_ext")]
        if not repairs:
            if code == 2 and _COLLECTED.search(output) and _CONTINUE not in test_command:
                # Some files cannot be collected (an import nothing can install, a warning the
                # project turns into an error) but the rest can: run the rest.
                run.log.section(f"collection errors remain: running what collects ({_CONTINUE})")
                test_command = f"{test_command} {_CONTINUE}"
                continue
            break  # the baseline classifies what is left
        tried.append(repairs[0])
        step = _collection_repair(run, repairs[0], checkout, options)
        while step is not None:
            if run(step.why, step.run, step.env) == 0:
                steps.append(step)
                break
            # A module the tests import whose releases of the commit's date cannot be installed here
            # (only sdists uv refuses, say): its newest release is better than a collection error.
            step = next(iter(without_install_limits(step, run.env) or []), None)
    return steps, test_command


def _collection_repair(
    run: BuildRunner, repair: Repair, checkout: Checkout, options: BuildOptions
) -> RecipeStep | None:
    """The install step for a repair of collection: the distribution to install, the one to step
    back to its newest release older than the installed one and out before the commit's date, or
    the one to step forward to a release that runs on the interpreter (:mod:`images.forward_repair`)."""
    if repair.kind == "build_ext":
        # Without build isolation: the build requirements (Cython) the install steps put in the venv.
        command = "uv pip install setuptools wheel && python setup.py build_ext --inplace"
        return RecipeStep(command, f"{repair.why} (the checkout's own extensions, built in place)")
    if repair.kind == "install":
        editable = "-e " if repair.value.startswith("./") else ""  # a folder of the checkout: its code
        return RecipeStep(f"uv pip install {editable}{shlex.quote(repair.value)}", repair.why)
    installed = run.installed_version(repair.value)
    if repair.kind == "step_forward":
        network = options.network
        forward = forward_step(
            repair.value, installed, run.python_version(), repair.why,
            index_url=network.index_url or default_index_url(), ca_bundle=network.ca_bundle,
            margin=options.resolve_margin,
        )  # fmt: skip
        if isinstance(forward, str):
            run.log.section(forward)
            return None
        return forward
    if installed is None:
        run.log.section(f"{repair.value} is not installed: nothing to step back")
        return None
    requirement = shlex.quote(f"{repair.value}<{installed}")
    why = f"repair: {repair.why} ({repair.value} {installed} is newer than the project expects)"
    if checkout.committed_at is None:
        return RecipeStep(f"uv pip install {requirement}", why)
    moment = (checkout.committed_at + options.resolve_margin).astimezone(UTC)
    return RecipeStep(f"uv pip install --exclude-newer {moment:%Y-%m-%dT%H:%M:%SZ} {requirement}", why)


def from_checkout(*, editable: bool = False) -> str:
    """A script printing the name of every distribution the venv has from the checkout itself (its
    ``direct_url`` is ``file:///repo``), installed editable only when ``editable``. It ends with a line
    break: a here-document's end must stand alone on its line, in ``$( )`` too."""
    wanted = ' and url.get("dir_info", {}).get("editable")' if editable else ""
    return f"""{VENV_DIR}/bin/python - <<'EOF'
import importlib.metadata, json
for dist in importlib.metadata.distributions():
    url = json.loads(dist.read_text("direct_url.json") or "{{}}")
    if url.get("url", "").rstrip("/") == "file://{REPO_DIR}"{wanted}:
        print(dist.metadata["Name"])
EOF
"""


def keep_project_installed(run: BuildRunner, steps: list[RecipeStep]) -> list[RecipeStep]:
    """``steps``, plus the project's install again when a later step replaced it with a release.

    A pinned requirements file installs a released copy over the checkout (jinja2's
    ``requirements/dev.txt`` pins Jinja2 for Sphinx; a pip-compiled one pins click for pip-tools):
    tests then import site-packages, and neither an agent's fix nor an injected bug reaches them. The
    project step runs again with ``--no-deps``, which keeps the versions the other steps chose.
    """
    project = next((step for step in steps if step.required and installs_the_checkout(step.run)), None)
    if project is None:
        return steps
    # An editable install must stay editable: a copy of the checkout would not see changes to it either.
    editable = bool(re.search(r"(?:^|\s)(?:-e|--editable)(?:\s|=)", project.run))
    check = f'test -n "$({from_checkout(editable=editable)})"'
    if run("is the project still installed from the checkout?", check, {}) == 0:
        return steps
    again = RecipeStep(
        project.run.replace("uv pip install ", "uv pip install --no-deps ", 1),
        "the project again: a later step installed a released copy over it",
        project.env,
    )
    if run(again.why, again.run, again.env) != 0:
        raise BuildFailed("install_failed", f"{again.why}, and that failed (see the log)")
    return [*steps, again]


def installs_the_checkout(command: str) -> bool:
    """Whether ``command`` is a ``uv pip install`` of the checkout (``.``, ``.[extras]``, editable or not)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    return "uv pip install" in command and any(re.fullmatch(r"\.(\[[^\]]*\])?", word) for word in words)
