"""Tasks end to end on generated fixture repositories: mutate-fix per operator family, SWE-bench import."""

from __future__ import annotations

import gzip
import json

import pytest

from envs.coverage import Coverage
from envs.docker_backend import DockerBackend
from envs.issue_import import import_instances
from envs.mutate import OPERATORS
from envs.mutate_fix import MutateOptions, generate, problem_statement
from envs.swebench import read_instances
from envs.tasks import verify
from images.sources import parse_source
from storage import ImageStatus, TaskStatus
from tests.cli import forager
from tests.repos import PYPROJECT, commit, make_repo

pytestmark = pytest.mark.docker

STATS = """\
import math
from collections import Counter


def clamp(value, low, high):
    if value < low:
        return low
    if value > high:
        return high
    return value


def mean(values):
    total = sum(values)
    count = len(values)
    return total / count


def hypotenuse(a, b):
    return math.sqrt(a * a + b * b)


def most_common(words):
    counts = Counter(words)
    word, _ = counts.most_common(1)[0]
    return word


def is_public(name, banned):
    return bool(name) and not name.startswith("_") and name not in banned


def scaled(values, factor):
    return [round(v * factor, 2) for v in values]
"""

STATS_TESTS = """\
from stats import clamp, hypotenuse, is_public, mean, most_common, scaled


def test_clamp_low():
    assert clamp(-5, 0, 10) == 0


def test_clamp_high():
    assert clamp(50, 0, 10) == 10


def test_clamp_inside():
    assert clamp(5, 0, 10) == 5


def test_mean():
    assert mean([1, 2, 3, 6]) == 3


def test_hypotenuse():
    assert hypotenuse(3, 4) == 5


def test_most_common():
    assert most_common(["a", "b", "b"]) == "b"


def test_is_public():
    assert is_public("name", set())
    assert not is_public("_private", set())
    assert not is_public("", set())
    assert not is_public("banned", {"banned"})


def test_scaled():
    assert scaled([1.5, 2.25], 2) == [3.0, 4.5]
"""


def stats_project() -> dict[str, str]:
    return {
        "pyproject.toml": PYPROJECT.format(name="stats", dependencies=""),
        "src/stats/__init__.py": STATS,
        "tests/test_stats.py": STATS_TESTS,
    }


def test_every_operator_family_yields_verified_tasks_that_export_and_import(
    builder, store, docker_client, tmp_path
):
    make_repo(tmp_path / "stats", stats_project())
    built = builder.build(parse_source(str(tmp_path / "stats")))
    assert built.status == ImageStatus.READY, built.reason
    image = store.get_image(built.tag)

    options = MutateOptions(max_tasks=100, per_function=2, seed=7)
    report = generate(DockerBackend(docker_client), store, image, options, cache_dir=tmp_path / "cache")

    families = {task.meta["family"] for task in report.tasks}
    assert families == set(OPERATORS.values()), (
        f"families without a task: {set(OPERATORS.values()) - families}"
    )
    with gzip.open(tmp_path / "cache" / "coverage.json.gz", "rt") as cached:
        kept = Coverage.from_json(json.load(cached))
    by_line = kept.lines["src/stats/__init__.py"]  # relative paths, as test ids are
    assert by_line[7] == {"tests/test_stats.py::test_clamp_low"}  # `return low`
    assert by_line[6] == {f"tests/test_stats.py::test_clamp_{case}" for case in ("low", "high", "inside")}
    assert 5 not in by_line, "a def line runs at import, in no test's run phase"
    unbroken_runs = 0
    for task in report.tasks:
        assert task.status == TaskStatus.VERIFIED and task.fail_to_pass and task.pass_to_pass
        assert not set(task.fail_to_pass) & set(task.pass_to_pass)
        # The tests executing the change once, then the task's own tests with the bug, and without it
        # only for the first task of these test files: that run is the same for all of them.
        together = len(task.fail_to_pass) + len(task.pass_to_pass)
        executions = task.meta["test_executions"]
        assert together < executions <= len(image.baseline) + 2 * together
        unbroken_runs += executions > len(image.baseline) + together
        assert task.meta["description"] not in task.problem_statement
    assert unbroken_runs == 1, "one test file: the unbroken code is run once"
    for task in report.tasks[:4]:  # grading is the slow part: a sample, across operators
        verification = verify(DockerBackend(docker_client), task, image)
        assert verification.ok, (task.instance_id, verification.gold.status, verification.start.status)

    again = generate(DockerBackend(docker_client), store, image, options, cache_dir=tmp_path / "cache")
    assert [t.instance_id for t in again.tasks] == [t.instance_id for t in report.tasks]
    assert sum(s.candidates for s in again.stats.values()) == 0, "a second run validates nothing again"

    # Exported as SWE-bench JSONL, then imported as new instances: the same starts, verified again.
    exported = forager("tasks", "export", "--kind", "mutate_fix", str(tmp_path / "out.jsonl"), home=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == len(report.tasks) and lines[0]["image_source"] == str(tmp_path / "stats")
    original = {line["instance_id"]: line for line in lines[:2]}
    copies = [{**line, "instance_id": f"copy-{line['instance_id']}"} for line in original.values()]
    copies[1]["setup_patch"] = ""  # the working code as the start: it must not verify
    (tmp_path / "copies.jsonl").write_text("".join(json.dumps(copy) + "\n" for copy in copies))
    imported = forager("tasks", "import", "--json", str(tmp_path / "copies.jsonl"), home=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert [r["status"] for r in json.loads(imported.stdout)] == ["verified", "invalid"]
    copy = store.get_task(copies[0]["instance_id"])
    first = store.get_task(lines[0]["instance_id"])
    assert (copy.kind, copy.image_id, copy.setup_patch, copy.gold_patch, copy.fail_to_pass) == (
        first.kind, first.image_id, first.setup_patch, first.gold_patch, first.fail_to_pass
    )  # fmt: skip
    validated = forager("tasks", "validate", "--json", *(c["instance_id"] for c in copies), home=tmp_path)
    assert validated.returncode == 1, "one of them does not verify"
    assert [(v["task"], v["ok"], v["start"]["status"]) for v in json.loads(validated.stdout)] == [
        (copies[0]["instance_id"], True, "unresolved"),
        (copies[1]["instance_id"], False, "resolved"),
    ]

    docker_client.images.remove(image.tag, force=True)  # a task whose image is gone is an error, not a crash
    gone = forager("tasks", "validate", "--json", copies[0]["instance_id"], home=tmp_path)
    assert gone.returncode == 1 and "does not exist" in json.loads(gone.stdout)[0]["error"]


def test_tests_that_execute_no_repository_code_are_told_apart(builder, tmp_path):
    # What tests importing an installed copy of the project look like to coverage.
    tests = "import json\n\n\ndef test_dumps():\n    assert json.dumps(1) == '1'\n"
    make_repo(tmp_path / "stats", {**stats_project(), "tests/test_stats.py": tests})
    built = builder.build(parse_source(str(tmp_path / "stats")))
    assert built.status == ImageStatus.READY, built.reason
    result = forager("tasks", "mutate", "--json", home=tmp_path)
    assert result.returncode == 1, "no image could give tasks"
    (skipped,) = json.loads(result.stdout)
    assert skipped["image"] == built.tag
    assert "execute no file of the repository but themselves" in skipped["error"]


def test_problem_statement_names_function_and_tests_not_the_mutation():
    text = problem_statement("Cache.get", "src/cache.py", ["tests/test_cache.py::test_get"])
    assert "`Cache.get`" in text and "`src/cache.py`" in text and "tests/test_cache.py::test_get" in text


def test_swe_bench_instance_of_a_fixture_repo_is_imported_and_verified(
    builder, store, docker_client, tmp_path
):
    buggy = {
        **stats_project(),
        "src/stats/__init__.py": STATS.replace("return total / count", "return total // count"),
    }
    repo = make_repo(tmp_path / "repos" / "stats", buggy)
    base = repo.head.commit.hexsha
    regression = "\n\ndef test_mean_is_exact():\n    assert mean([1, 2]) == 1.5\n"
    commit(
        repo, {"src/stats/__init__.py": STATS, "tests/test_stats.py": STATS_TESTS + regression}, "Fix mean"
    )
    patch = repo.git.diff(base, "HEAD", "--", "src")
    test_patch = repo.git.diff(base, "HEAD", "--", "tests")
    instance = {
        "repo": "stats", "instance_id": "stats__stats-1", "base_commit": base, "patch": patch + "\n",
        "test_patch": test_patch + "\n", "problem_statement": "mean([1, 2]) is 1, not 1.5",
        "FAIL_TO_PASS": json.dumps(["tests/test_stats.py::test_mean_is_exact"]),
        "PASS_TO_PASS": ["tests/test_stats.py::test_mean", "tests/test_stats.py::test_clamp_low"],
    }  # fmt: skip
    wrong = {**instance, "instance_id": "stats__stats-2", "patch": ""}
    no_start = {
        **instance,
        "instance_id": "stats__stats-3",
        "setup_patch": patch.replace("total", "sum") + "\n",
    }
    jsonl = tmp_path / "instances.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in (instance, wrong, no_start)))

    results = import_instances(
        builder,
        store,
        DockerBackend(docker_client),
        read_instances(jsonl),
        source=str(tmp_path / "repos" / "{repo}"),
    )
    assert [(r.instance_id, r.status) for r in results] == [
        ("stats__stats-1", "verified"),
        ("stats__stats-2", "invalid"),
        ("stats__stats-3", "invalid"),  # its setup patch does not apply: the others are imported all the same
    ]
    assert "setup patch does not apply" in results[2].reason
    task = store.get_task("stats__stats-1")
    assert task.image.repository.commit == base and task.test_patch.startswith("diff --git")
    again = import_instances(
        builder,
        store,
        DockerBackend(docker_client),
        read_instances(jsonl),
        source=str(tmp_path / "repos" / "{repo}"),
    )
    assert {r.status for r in again} == {"skipped"}
