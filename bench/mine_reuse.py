"""Mining benchmark on a generated history: image builds per mined task, with and without layers.

    python bench/mine_reuse.py [--fixes 6] [--home DIR] [--build-each]

The history (generated in a temporary folder, never committed) holds ``--fixes`` bug fixes, each with
its regression test (the second fix's test in a commit of its own), and halfway a new version that
adds a dependency: with layers (``images/layers.py``) every parent's install is planned alike, so they
share one build, and the layers after the change install the new dependency. Prints candidates,
tasks, full builds, layers, builds per task and the wall time. Target (issue #12): <= 0.5 builds per
mined task.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import git

from envs.docker_backend import DockerBackend
from envs.mine import mine
from images.builder import BuildOptions, ImageBuilder
from images.engine import connect
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import Store

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "calc"
version = "{version}"
requires-python = ">=3.8"
dependencies = [{dependencies}]

[project.optional-dependencies]
test = ["pytest"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""


def history(root: Path, fixes: int) -> None:
    """A project whose functions ``f0`` ... each return 0 instead of their number, fixed one a commit."""
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "Bench").set_value("user", "email", "bench@example.invalid")

    def commit(files: dict[str, str], message: str) -> None:
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        repo.git.add("--all")
        repo.git.commit("-q", "-m", message)

    broken = {f"src/calc/f{n}.py": f"def f{n}():\n    return 0\n" for n in range(fixes)}
    smoke = "def test_imports():\n    import calc  # noqa: F401\n"
    pyproject = PYPROJECT.format(version="0.1.0", dependencies="")
    commit({"pyproject.toml": pyproject, "src/calc/__init__.py": "", **broken, "tests/test_smoke.py": smoke},
           "Initial commit")  # fmt: skip
    for n in range(fixes):
        if n == fixes // 2:
            pyproject = PYPROJECT.format(version="0.2.0", dependencies='"six"')
            commit({"pyproject.toml": pyproject}, "Start 0.2 development, with six")
        test = f"from calc.f{n} import f{n}\n\n\ndef test_f{n}():\n    assert f{n}() == {n + 1}\n"
        fixed = {f"src/calc/f{n}.py": f"def f{n}():\n    return {n + 1}\n"}
        if n == 1:  # the fix first, its regression test in the next commit: one candidate, a pair
            commit(fixed, f"Fix f{n} returning 0")
            commit({f"tests/test_f{n}.py": test}, f"Test f{n}")
        else:
            commit({**fixed, f"tests/test_f{n}.py": test}, f"Fix f{n} returning 0")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fixes", type=int, default=6)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--build-each", action="store_true", help="One full build per parent commit.")
    args = parser.parse_args()
    client = connect(timeout=3600)
    with tempfile.TemporaryDirectory(prefix="forager-mine-bench-") as tmp:
        root = Path(tmp) / "calc"
        history(root, args.fixes)
        home = args.home or Path(tmp) / "home"
        store = Store(f"sqlite:///{Path(tmp) / 'forager.db'}")
        builder = ImageBuilder(client, store, home, BuildOptions(network=NetworkSettings.from_environment()))
        started = time.monotonic()
        try:
            report = mine(
                builder, DockerBackend(client), store, parse_source(str(root)), max_tasks=args.fixes,
                reuse_environments=not args.build_each,
            )  # fmt: skip
            seconds = time.monotonic() - started
        finally:
            for image in store.list_images():
                if image.docker_id:
                    client.images.remove(image.tag, force=True)
            store.close()
    per_task = report.builds_per_task
    print(f"fixes in the history   {args.fixes}")
    print(f"candidates             {report.candidates}")
    print(f"tasks made             {len(report.made)}")
    print(f"full builds            {report.built}")
    print(f"layers                 {report.layered}")
    print(f"builds per task        {per_task:.2f}" if per_task is not None else "builds per task        -")
    print(f"wall time              {seconds:.0f} s ({seconds / max(len(report.made), 1):.0f} s per task)")
    for skipped in report.skipped:
        print(f"skipped {skipped.sha[:12]}: {skipped.reason}")


if __name__ == "__main__":
    main()
