"""Mining issue-fix tasks from history: candidate commits (pure git) and the pipeline (real Docker)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import git
import pytest

from envs.candidates import MAX_GOLD_FILES, MAX_GOLD_LINES, candidate_commits, is_chore, problem_statement
from envs.docker_backend import DockerBackend
from envs.docker_runtime import DockerRuntime
from envs.grading import TestSpec, grade
from envs.mine import MineError, MineReport, Skipped, mine
from envs.swebench import files_touched
from envs.tasks import prepare
from images.builder import BuildOptions, ImageBuilder
from images.proxy import NetworkSettings
from images.reuse import Environments
from images.sources import parse_source
from storage import ImageStatus, Store, TaskKind, TaskStatus
from tests.cli import forager
from tests.repos import commit, make_repo, python_project, write

CALC = '''\
__version__ = "0.1.0"


def add(a, b):
    """Sum of a and b."""
    return a + b


def sub(a, b):
    return abs(a - b)


def mul(a, b):
    return a + b
'''
TEST_MUL = "\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
TEST_MORE = "from calc import add\n\n\ndef test_add_zero():\n    assert add(1, 0) == 1\n"
TEST_STATE = """\
from pathlib import Path


def test_passes_the_second_time():
    marker = Path("/tmp/forager-test-ran-before")
    ran_before = marker.exists()
    marker.touch()
    assert ran_before
"""
TEST_SUB = "from calc import sub\n\n\ndef test_sub_negative():\n    assert sub(3, 5) == -2\n"
FIX_MESSAGE = (
    "Fix mul returning the sum\n\nmul(2, 3) returned 5 instead of 6.\n\n"
    "Signed-off-by: Dev <dev@example.invalid>\nCo-authored-by: Other <other@example.invalid>\n"
)
MERGE_MESSAGE = (
    "Merge pull request #7 from user/branch\n\nFix subtraction\n\nsub(3, 5) returned 2 instead of -2.\n"
)
#: Binary files on both sides of the split: the patches must carry them.
GOLDEN = bytes(range(256))


@dataclass(frozen=True)
class History:
    """The fixture repository and the commits the tests name."""

    repo: git.Repo
    fix: str
    merge: str
    typo: str
    """The merge's first parent."""


def make_history(root: Path, salt: str = "") -> History:
    """A realistic history, oldest first: see the comments. A ``salt`` makes every commit id unique
    (parallel test workers making the history in the same second would otherwise make the same ids,
    hence the same image tags)."""
    tests = python_project()["tests/test_calc.py"].replace("import add, sub", "import add, mul, sub")
    # The root commit changes code and tests but has no parent to start from.
    salted = {".salt": salt} if salt else {}
    repo = make_repo(root, {**python_project(tests=tests), "src/calc/__init__.py": CALC, **salted})
    # A bug fix with a regression test (and a binary file on each side).
    (root / "src/calc/table.bin").write_bytes(GOLDEN[::-1])
    (root / "tests/data").mkdir()
    (root / "tests/data/golden.bin").write_bytes(GOLDEN)
    fixed_mul = CALC.replace("def mul(a, b):\n    return a + b", "def mul(a, b):\n    return a * b")
    fix = commit(
        repo, {"src/calc/__init__.py": fixed_mul, "tests/test_calc.py": tests + TEST_MUL}, FIX_MESSAGE
    )
    # Docs only, tests only, code only: none is a candidate.
    commit(repo, {"README.md": "# calc\n", "docs/usage.md": "Add numbers.\n"}, "Document usage")
    commit(repo, {"tests/test_more.py": TEST_MORE}, "Test adding zero")
    commit(repo, {"src/calc/neg.py": "def neg(a):\n    return -a\n"}, "Add neg")
    # A pull request: its own commit is not on the first-parent history, only its merge is.
    branch_point = repo.head.commit.hexsha
    repo.git.checkout("-q", "-b", "user/branch")
    fixed_sub = (root / "src/calc/__init__.py").read_text().replace("abs(a - b)", "a - b")
    commit(repo, {"src/calc/__init__.py": fixed_sub, "tests/test_sub.py": TEST_SUB}, "Make sub signed")
    repo.git.checkout("-q", "main")
    assert repo.head.commit.hexsha == branch_point
    typo = commit(repo, {"README.md": "# calc, a calculator\n"}, "Fix typo in README")
    repo.git.merge("-q", "--no-ff", "-m", MERGE_MESSAGE, "user/branch")
    merge = repo.head.commit.hexsha
    # Chores that change code and tests: only their messages tell them apart from fixes.
    bumped = (root / "src/calc/__init__.py").read_text().replace('"0.1.0"', '"0.2.0"')
    version_test = "import calc\n\n\ndef test_version():\n    assert calc.__version__ == '0.2.0'\n"
    commit(
        repo, {"src/calc/__init__.py": bumped, "tests/test_version.py": version_test}, "Bump version to 0.2.0"
    )
    repo.git.revert("--no-edit", fix)
    return History(repo, fix, merge, typo)


# -- candidates (pure) ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return make_history(tmp_path_factory.mktemp("history") / "calc")


def test_candidates_are_the_fix_and_the_merged_pull_request(history: History) -> None:
    found = candidate_commits(history.repo, max_commits=50)
    assert [c.sha for c in found] == [history.merge, history.fix]
    merge, fix = found

    assert fix.parent == history.repo.commit(history.fix).parents[0].hexsha
    assert fix.title == "Fix mul returning the sum"
    assert fix.message == "Fix mul returning the sum\n\nmul(2, 3) returned 5 instead of 6."
    assert fix.test_files == ("tests/data/golden.bin", "tests/test_calc.py"), "data a suite reads too"
    assert files_touched(fix.gold_patch) == ["src/calc/__init__.py", "src/calc/table.bin"]
    assert files_touched(fix.test_patch) == ["tests/data/golden.bin", "tests/test_calc.py"]

    assert merge.parent == history.typo, "a merge is diffed against its first parent"
    assert merge.title == "Fix subtraction"
    assert merge.message == "Fix subtraction\n\nsub(3, 5) returned 2 instead of -2."
    assert merge.test_files == ("tests/test_sub.py",)
    assert files_touched(merge.gold_patch) == ["src/calc/__init__.py"], "main's README change is not in it"
    assert files_touched(merge.test_patch) == ["tests/test_sub.py"]


def test_patches_apply_with_git_and_split_code_from_tests(history: History, tmp_path: Path) -> None:
    for candidate in candidate_commits(history.repo, max_commits=50):
        scratch = git.Repo.clone_from(history.repo.working_dir, tmp_path / candidate.sha)
        scratch.git.checkout("-q", candidate.parent)
        _apply(scratch, candidate.test_patch)
        assert _changed(scratch) == set(files_touched(candidate.test_patch))
        _apply(scratch, candidate.gold_patch)
        assert _changed(scratch) == set(files_touched(candidate.test_patch + candidate.gold_patch))
        # Both patches together make exactly the commit's tree, binary files included.
        scratch.git.add("--all")
        assert scratch.git.diff("--cached", "--name-only", candidate.sha) == ""
        if candidate.sha == history.fix:
            assert (Path(scratch.working_dir) / "tests/data/golden.bin").read_bytes() == GOLDEN


def _apply(repo: git.Repo, patch: str) -> None:
    done = subprocess.run(
        ["git", "apply", "--binary", "-"], cwd=repo.working_dir, input=patch.encode(), capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()


def _changed(repo: git.Repo) -> set[str]:
    repo.git.add("--all")
    changed = set(repo.git.diff("--cached", "--name-only").split())
    repo.git.reset("-q")
    return changed


def test_walk_starts_at_rev_and_stops_after_max_commits(history: History) -> None:
    # Newest first: revert, bump, merge ... so three commits reach the merge and no further.
    assert [c.sha for c in candidate_commits(history.repo, max_commits=3)] == [history.merge]
    assert candidate_commits(history.repo, max_commits=2) == []
    assert [c.sha for c in candidate_commits(history.repo, max_commits=50, rev=history.fix)] == [history.fix]


def test_oversized_fixes_plain_merges_and_untestable_changes_are_not_candidates(tmp_path: Path) -> None:
    root = tmp_path / "big"
    repo = make_repo(root, python_project())

    def change(files: dict[str, str], message: str) -> str:
        tests = (root / "tests/test_calc.py").read_text() + "#\n"  # every change comes with a test change
        return commit(repo, {**files, "tests/test_calc.py": tests}, message)

    lines = "\n".join(f"X{n} = {n}" for n in range(MAX_GOLD_LINES)) + "\n"
    at_lines = change({"src/calc/big.py": lines}, "Add big table")
    change({"src/calc/bigger.py": lines + "Y = 1\n"}, "Add a bigger table")
    at_files = change({f"src/calc/m{n}.py": "A = 1\n" for n in range(MAX_GOLD_FILES)}, "Add modules")
    change({f"src/calc/n{n}.py": "A = 1\n" for n in range(MAX_GOLD_FILES + 1)}, "Add more modules")
    change({"src/calc/data.json": "{}\n", "docs/x.md": "x\n"}, "Non-Python code only")
    commit(repo, {"src/calc/c.py": "C = 1\n", "tests/conftest.py": "C = 1\n"}, "Only a conftest for tests")
    repo.git.checkout("-q", "-b", "feature")
    change({"src/calc/f.py": "F = 1\n"}, "Feature")
    repo.git.checkout("-q", "main")
    commit(repo, {"README.md": "x\n"}, "Readme")
    repo.git.merge("-q", "--no-ff", "-m", "Merge branch 'feature'", "feature")

    found = candidate_commits(repo, max_commits=50)
    assert [c.sha for c in found] == [at_files, at_lines], "the limits are inclusive"


@pytest.mark.parametrize(
    ("statement", "chore"),
    [
        ("Fix mul returning the sum", False),
        ("Release the lock before sleeping", False),
        ("Reverted list is empty: fix", False),
        ("Fix version parsing", False),
        ('Revert "Fix mul"\n\nThis reverts commit 0123456789abcdef.', True),
        ('Reapply "Fix mul"', True),
        ("Undo the fix\n\nThis reverts commit 0123456.", True),
        ("Bump version to 0.2.0", True),
        ("Bump requests from 2.31.0 to 2.32.0", True),
        ("Release 1.2.0", True),
        ("Version 1.2", True),
        ("Prepare the 1.2 release", True),
        ("v1.2.3", True),
        ("[pre-commit.ci] pre-commit autoupdate\n\nupdates:\n- example/hooks: v1 → v2", True),
        ("[pre-commit.ci] auto fixes from pre-commit.com hooks", True),
        ("Run pre-commit on the fixtures too", False),
    ],
)
def test_reverts_and_version_bumps_are_chores(statement: str, chore: bool) -> None:
    assert is_chore(statement) is chore


def test_problem_statements_from_commits_and_pull_request_merges() -> None:
    assert problem_statement(MERGE_MESSAGE, merge=True) == (
        "Fix subtraction\n\nsub(3, 5) returned 2 instead of -2."
    )
    assert problem_statement("Merge branch 'feature' into main\n", merge=True) is None
    assert problem_statement("Merge pull request #7 from user/branch\n", merge=True) is None
    # GitHub's "pull request title" merge message: the title with its number, then the body.
    assert problem_statement("Allow a timestamp of 0 (#3168)\n\nparse(0) raised.\n", merge=True) == (
        "Allow a timestamp of 0\n\nparse(0) raised."
    )
    assert problem_statement("Merge branch 'stable' (#12 was here)\n", merge=True) is None
    assert problem_statement(FIX_MESSAGE, merge=False) == (
        "Fix mul returning the sum\n\nmul(2, 3) returned 5 instead of 6."
    )
    assert problem_statement("Signed-off-by: A <a@b>\n", merge=False) is None


def test_sources_without_history_are_refused(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'forager.db'}")
    builder = ImageBuilder(None, store, tmp_path / "home")  # refused before any build: no engine needed
    with pytest.raises(MineError, match="sdist has no history"):
        mine(builder, DockerBackend(builder.client), store, parse_source("pypi:attrs==23.1.0"), max_tasks=1)
    plain = write(tmp_path / "plain", python_project())
    with pytest.raises(MineError, match="not a git repository"):
        mine(builder, DockerBackend(builder.client), store, parse_source(str(plain)), max_tasks=1)
    store.close()


# -- the pipeline (Docker) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mined:
    history: History
    rejected: list[Skipped]
    """The candidates on top of the history, newest first, and why validation rejects them."""
    builder: ImageBuilder
    store: Store
    report: MineReport


@pytest.fixture(scope="module")
def mined(docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mined]:
    """One real mining run of the fixture history and two rejected candidates on top: four parent commits
    whose installs are planned alike, so one image build and three layers over it."""
    tmp_path = tmp_path_factory.mktemp("mine")
    history = make_history(tmp_path / "calc", salt=uuid.uuid4().hex)
    # Code and tests change, but no test fails before the change.
    refactored = (
        (tmp_path / "calc/src/calc/__init__.py")
        .read_text()
        .replace("    return a - b\n", "    difference = a - b\n    return difference\n")
    )
    sub_tests = TEST_SUB + "\n\ndef test_sub_zero():\n    assert sub(2, 2) == 0\n"
    refactor = commit(
        history.repo, {"src/calc/__init__.py": refactored, "tests/test_sub.py": sub_tests}, "Refactor sub"
    )
    # The new test passes only when it ran before in the same container: validation, which runs it before
    # and after the change in one environment, takes it for a fix; the real grader, in fresh ones, does not.
    stateful = commit(
        history.repo,
        {"src/calc/neg.py": "def neg(a):\n    return 0 - a\n", "tests/test_state.py": TEST_STATE},
        "Negate by subtraction",
    )
    rejected = [
        Skipped(stateful, "the real grader disagrees: gold patch unresolved, unmodified start unresolved"),
        Skipped(refactor, "no test fails before the fix and passes after it (twice, under the same id)"),
    ]
    store = Store(f"sqlite:///{tmp_path / 'forager.db'}")
    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=600)
    builder = ImageBuilder(docker_client, store, tmp_path / "home", options)
    try:
        report = mine(
            builder,
            DockerBackend(builder.client),
            store,
            parse_source(history.repo.working_dir),
            max_tasks=5,
            test_timeout=120,
        )
        yield Mined(history, rejected, builder, store, report)
    finally:
        for image in store.list_images():
            if image.docker_id:
                docker_client.images.remove(image.tag, force=True)
        store.close()


@pytest.mark.docker
def test_the_fix_becomes_a_verified_task_the_real_grader_agrees_with(mined: Mined, docker_client) -> None:
    history, store = mined.history, mined.store
    assert (mined.report.candidates, mined.report.tried) == (4, 4)
    assert mined.report.skipped == mined.rejected
    # The newest candidate's parent is built; the others are checked out in layers over that image.
    assert [build.cached for build in mined.report.builds] == [False]
    assert [build.cached for build in mined.report.layers] == [False] * 3
    assert all("-layer-" in build.tag for build in mined.report.layers)
    assert mined.report.made == [task.instance_id for task in mined.report.tasks]
    assert mined.report.builds_per_task == 0.5
    assert [task.instance_id for task in mined.report.tasks] == [
        f"calc.{history.merge[:12]}",
        f"calc.{history.fix[:12]}",
    ]
    task = store.get_task(f"calc.{history.fix[:12]}")
    (candidate,) = [c for c in candidate_commits(history.repo, max_commits=50) if c.sha == history.fix]
    parent = candidate.parent
    assert (task.kind, task.status, task.setup_patch) == (TaskKind.ISSUE_FIX, TaskStatus.VERIFIED, "")
    assert (task.gold_patch, task.test_patch) == (candidate.gold_patch, candidate.test_patch)
    assert task.problem_statement == candidate.message
    assert task.fail_to_pass == ["tests/test_calc.py::test_mul"]
    assert task.pass_to_pass == [
        "tests/test_calc.py::test_add",
        "tests/test_calc.py::test_add_commutes[1-1]",
        "tests/test_calc.py::test_add_commutes[2--2]",
        "tests/test_calc.py::test_sub",
    ]
    assert task.meta["commit"] == history.fix and task.meta["parent"] == parent
    assert task.meta["source"] == history.repo.working_dir
    assert task.meta["title"] == "Fix mul returning the sum"
    assert task.meta["pass_to_pass_from"] == "test_files"
    # Three runs of the file's 6 tests (one skipped), then two grades of the 5 chosen ones.
    assert task.meta["test_executions"] == 3 * 6 + 2 * 5
    image = store.get_image(task.image_id)
    assert (image.status, image.repository.commit) == (ImageStatus.READY, parent)
    # A layer over the newest parent's image: its history holds the parent and its ancestors only, so
    # neither the fix nor the tests that came with it are anywhere in the start state.
    assert "-layer-" in image.tag
    history_inside = docker_client.containers.run(
        image.tag, ["git", "log", "--all", "--format=%H"], remove=True, network_mode="none"
    ).decode()
    assert history_inside.split() == [c.hexsha for c in history.repo.iter_commits(parent)]

    spec = TestSpec(image.test_command, task.fail_to_pass, task.pass_to_pass, task.test_patch)
    statuses = {}
    for patch in (task.gold_patch, ""):
        with DockerRuntime.start(docker_client, image.tag) as env:
            prepare(env, task.kind, task.setup_patch)
            # The start state is the parent commit: the regression test is withheld until grading.
            assert "test_mul" not in env.read_file("tests/test_calc.py").decode()
            statuses[patch] = grade(env, patch, spec, timeout=120)
    assert statuses[task.gold_patch].status == "resolved"
    assert statuses[""].status == "unresolved"
    assert statuses[""].fail_to_pass == {"tests/test_calc.py::test_mul": "failed"}


@pytest.mark.docker
def test_a_pull_request_with_only_new_tests_takes_pass_to_pass_from_neighbours(mined: Mined) -> None:
    task = mined.store.get_task(f"calc.{mined.history.merge[:12]}")
    assert task.status == TaskStatus.VERIFIED
    assert task.meta["parent"] == mined.history.typo
    assert task.problem_statement == "Fix subtraction\n\nsub(3, 5) returned 2 instead of -2."
    assert task.fail_to_pass == ["tests/test_sub.py::test_sub_negative"]
    assert task.meta["pass_to_pass_from"] == "neighbours"
    # The stable passing tests of the other files of tests/, the skipped one left out.
    assert task.pass_to_pass == [
        "tests/test_calc.py::test_add",
        "tests/test_calc.py::test_add_commutes[1-1]",
        "tests/test_calc.py::test_add_commutes[2--2]",
        "tests/test_calc.py::test_mul",
        "tests/test_calc.py::test_sub",
        "tests/test_more.py::test_add_zero",
    ]


@pytest.mark.docker
def test_a_second_run_stores_nothing_new_and_builds_nothing(mined: Mined, docker_client) -> None:
    tasks = {task.instance_id: task.id for task in mined.store.list_tasks()}
    commits = {commit.hexsha[:12] for commit in mined.history.repo.iter_commits("--all")}

    def history_images() -> set[str]:
        """Images of this history's commits (each tag starts with one): others build on the engine too."""
        # The engine's listing as it is: docker-py's images.list() inspects each image, and one another
        # worker removes in between raises ImageNotFound.
        listed = docker_client.api.images()
        return {
            image["Id"]
            for image in listed
            if any(tag.split(":")[-1][:12] in commits for tag in image.get("RepoTags") or [])
        }

    images = history_images()
    assert images, "the first run's images are there to compare"

    def again(**options: bool) -> MineReport:
        return mine(
            mined.builder,
            DockerBackend(mined.builder.client),
            mined.store,
            parse_source(mined.history.repo.working_dir),
            max_tasks=5,
            test_timeout=120,
            **options,
        )

    # The rejected candidates are remembered: nothing is tried, nothing is built.
    resumed = again()
    assert (resumed.tried, resumed.rejected_before, resumed.skipped, resumed.builds) == (0, 2, [], [])
    assert {task.instance_id: task.id for task in resumed.tasks} == tasks
    # Asked to, it tries them again, on the images the first run built.
    retried = again(retry_rejected=True)
    assert retried.tried == 2 and retried.skipped == mined.rejected
    assert [(build.tag, build.cached) for build in retried.builds] == [(mined.report.builds[0].tag, True)]
    assert [(build.tag, build.cached) for build in retried.layers] == [(mined.report.layers[0].tag, True)]
    assert {task.instance_id: task.id for task in mined.store.list_tasks()} == tasks
    assert history_images() == images


@pytest.mark.docker
def test_the_cli_mines_many_sources_resumes_and_sums_up(mined: Mined, tmp_path: Path) -> None:
    history = mined.history.repo.working_dir
    plain = write(tmp_path / "plain", python_project())
    args = ("--db", mined.store.url, "tasks", "mine", history, str(plain))

    done = forager(*args, "--json", home=mined.builder.home)

    assert done.returncode == 1, "a source that cannot be mined fails the command, after the others"
    report, failed = json.loads(done.stdout)["sources"]
    assert report["tasks"] == [task.instance_id for task in mined.report.tasks]
    # Stored tasks count and rejected candidates are not tried again: nothing is built.
    assert (report["made"], report["tried"], report["rejected_before"], report["builds"]) == ([], 0, 2, 0)
    reason = f"{plain} is not a git repository, so it has no history to mine; give a clone"
    assert failed == {"source": str(plain), "error": reason}
    assert done.stderr.splitlines()[-1] == f"error: {reason}", "after the progress display"

    # Up to the pull request's first parent: only the first fix is in range, already a task.
    table = forager(*args[:-1], "--until", mined.history.typo, home=mined.builder.home)
    assert table.returncode == 0, table.stderr
    assert "1 task(s), 0 new, from 0 of 1 candidates; 0 image build(s), 0 layer(s)" in table.stdout

    bad = forager(*args[:-1], "--since", "no-such-ref", home=mined.builder.home)
    assert bad.returncode == 1
    last = bad.stderr.splitlines()[-1]
    assert last.startswith("error: ") and "give dates (YYYY-MM-DD) or commits" in last


@pytest.mark.docker
def test_a_layer_brings_a_newer_commit_into_an_older_image(
    mined: Mined, docker_client, tmp_path: Path
) -> None:
    base = mined.store.get_image(mined.report.builds[0].tag)
    clone = git.Repo.clone_from(mined.history.repo.working_dir, tmp_path / "clone")
    with clone.config_writer() as config:
        config.set_value("user", "name", "Test Author")
        config.set_value("user", "email", "author@example.invalid")
    newer_neg = "def neg(a):\n    return -a  # newer\n"
    newer = commit(clone, {"src/calc/neg.py": newer_neg}, "Newer than the image")
    # A new run (nothing in memory) finds the base among the store's images of the source.
    environments = Environments(mined.builder, parse_source(mined.history.repo.working_dir), clone)
    assert environments.environment(newer) == environments.environment(base.repository.commit)
    made, layered = environments.image_for(newer)
    try:
        assert (made.status, made.commit, made.cached, layered) == (ImageStatus.READY, newer, False, True)
        record = mined.store.get_image(made.tag)
        # The base's test command and steps; its own date to resolve as of (the newer one).
        assert (record.test_command, record.recipe["steps"]) == (base.test_command, base.recipe["steps"])
        dates = [r.recipe["install_env"].get("UV_EXCLUDE_NEWER", "") for r in (base, record)]
        assert dates[1] >= dates[0]
        inside = docker_client.containers.run(
            made.tag,
            ["sh", "-c", "git log --all --format=%H && git status --porcelain && cat src/calc/neg.py"],
            remove=True,
            network_mode="none",
        ).decode()
        assert inside.split("\n") == [
            *(c.hexsha for c in clone.iter_commits(newer)), "def neg(a):", "    return -a  # newer", ""
        ]
        labels = docker_client.images.get(made.tag).attrs["Config"]["Labels"]
        assert (labels["forager.commit"], labels["forager.layer-of"]) == (newer, base.tag)
    finally:
        docker_client.images.remove(made.tag, force=True)
        mined.store.delete_image(made.tag)
