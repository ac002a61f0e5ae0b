"""SWE-bench JSONL in and out, and the files a patch touches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ForagerError
from envs.swebench import (
    EXTENSIONS,
    FIELDS,
    Instance,
    InstanceError,
    files_touched,
    read_instances,
    write_instances,
)

# Shaped like a line of princeton-nlp/SWE-bench: test lists as JSON strings, every field present.
REAL_LINE = {
    "repo": "astropy/astropy",
    "instance_id": "astropy__astropy-12907",
    "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607",
    "patch": (
        "diff --git a/astropy/modeling/separable.py b/astropy/modeling/separable.py\n"
        "--- a/astropy/modeling/separable.py\n"
        "+++ b/astropy/modeling/separable.py\n"
        "@@ -242,7 +242,7 @@ def _cstack(left, right):\n"
        "         cright = _coord_matrix(right, 'right', noutp)\n"
        "     else:\n"
        "         cright = np.zeros((noutp, right.shape[1]))\n"
        "-        cright[-right.shape[0]:, -right.shape[1]:] = 1\n"
        "+        cright[-right.shape[0]:, -right.shape[1]:] = right\n"
        " \n"
        "     return np.hstack([cleft, cright])\n"
        " \n"
    ),
    "test_patch": (
        "diff --git a/astropy/modeling/tests/test_separable.py "
        "b/astropy/modeling/tests/test_separable.py\n"
        "--- a/astropy/modeling/tests/test_separable.py\n"
        "+++ b/astropy/modeling/tests/test_separable.py\n"
        "@@ -28,6 +28,7 @@\n"
        " p1 = models.Polynomial1D(1, name='p1')\n"
        " \n"
        " \n"
        "+cm_4d_expected = (np.array([False, False, True, True]),)\n"
        " compound_models = {\n"
        "     'cm1': (map3 & sh1 | rot & sh1 | sh1 & sh2 & sh1,\n"
        "             (np.array([False, False, True]),\n"
    ),
    "problem_statement": (
        "Modeling's `separability_matrix` does not compute separability correctly for nested "
        "CompoundModels — e.g. `m.Pix2Sky_TAN() & cm` ⇒ wrong matrix. Ünïcödé: 数学, emoji 🚀.\n"
    ),
    "hints_text": "",
    "created_at": "2022-03-03T15:14:54Z",
    "version": "4.3",
    "FAIL_TO_PASS": json.dumps(
        [
            "astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]",
            "astropy/modeling/tests/test_separable.py::test_separable[compound_model9-result9]",
        ]
    ),
    "PASS_TO_PASS": json.dumps(["astropy/modeling/tests/test_separable.py::test_coord_matrix"]),
    "environment_setup_commit": "298ccb478e6bf092953bca67a3d29dc6c35f6752",
}


def write_lines(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    return path


def test_a_real_swebench_line_reads_with_unicode_intact(tmp_path: Path) -> None:
    (instance,) = read_instances(write_lines(tmp_path / "swe.jsonl", REAL_LINE))
    assert instance.instance_id == "astropy__astropy-12907" and instance.version == "4.3"
    assert "数学, emoji 🚀" in instance.problem_statement and "Ünïcödé" in instance.problem_statement
    assert instance.FAIL_TO_PASS == (
        "astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]",
        "astropy/modeling/tests/test_separable.py::test_separable[compound_model9-result9]",
    )
    assert instance.PASS_TO_PASS == ("astropy/modeling/tests/test_separable.py::test_coord_matrix",)
    assert files_touched(instance.patch) == ["astropy/modeling/separable.py"]
    assert files_touched(instance.test_patch) == ["astropy/modeling/tests/test_separable.py"]


def test_round_trip_writes_swebench_fields_and_json_string_test_lists(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", REAL_LINE, {**REAL_LINE, "instance_id": "second"})
    instances = read_instances(path)
    out = tmp_path / "out.jsonl"
    write_instances(out, instances)
    assert read_instances(out) == instances
    lines = out.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == list(FIELDS)
    assert first == REAL_LINE, "what SWE-bench wrote comes back byte for byte, as SWE-bench writes it"
    assert isinstance(first["FAIL_TO_PASS"], str) and isinstance(first["PASS_TO_PASS"], str)
    assert "🚀" in lines[0], "unicode is written as is, not escaped"
    assert not list(tmp_path.glob(".out.jsonl.*")), "no temporary file is left behind"


def test_foragers_own_fields_follow_swebenchs_and_only_when_set(tmp_path: Path) -> None:
    mutated = {**REAL_LINE, "setup_patch": "diff --git a/x b/x\n", "image_source": "pypi:six==1.17.0"}
    (instance,) = read_instances(write_lines(tmp_path / "in.jsonl", mutated))
    assert (instance.setup_patch, instance.image_source) == (mutated["setup_patch"], "pypi:six==1.17.0")
    write_instances(tmp_path / "out.jsonl", [instance])
    assert list(json.loads((tmp_path / "out.jsonl").read_text())) == [*FIELDS, *EXTENSIONS[:2]]


def test_test_lists_may_be_plain_lists_and_optional_fields_may_be_missing(tmp_path: Path) -> None:
    minimal = {
        "repo": "o/r",
        "instance_id": "o__r-1",
        "base_commit": "abc",
        "problem_statement": "broken",
        "FAIL_TO_PASS": ["tests/test_x.py::test_a", "tests/test_x.py::test_b[a b]"],
        "hints_text": None,
        "extra_field": "ignored",
    }
    (instance,) = read_instances(write_lines(tmp_path / "min.jsonl", minimal))
    assert instance.FAIL_TO_PASS == ("tests/test_x.py::test_a", "tests/test_x.py::test_b[a b]")
    assert instance.PASS_TO_PASS == ()
    assert instance.patch == instance.test_patch == instance.hints_text == instance.version == ""
    assert instance.environment_setup_commit == instance.created_at == ""


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text("\n" + json.dumps(REAL_LINE) + "\n\n   \n")
    assert [i.instance_id for i in read_instances(path)] == ["astropy__astropy-12907"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"repo": "o/r",', r"bad\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"bad\.jsonl:2: expected a JSON object, not list"),
        (
            json.dumps({k: v for k, v in REAL_LINE.items() if k != "base_commit"}),
            r":2: field base_commit is missing",
        ),
        (
            json.dumps({**REAL_LINE, "FAIL_TO_PASS": "[not json"}),
            r":2: field FAIL_TO_PASS is a string but not",
        ),
        (json.dumps({**REAL_LINE, "PASS_TO_PASS": '{"a": 1}'}), r":2: field PASS_TO_PASS must be a list"),
        (json.dumps({**REAL_LINE, "FAIL_TO_PASS": ["ok", 3]}), r":2: field FAIL_TO_PASS must be a list"),
        (json.dumps({**REAL_LINE, "version": 4.3}), r":2: field version must be a string, not float"),
        (
            json.dumps({**REAL_LINE, "instance_id": "astropy__astropy-12907"}),
            r":2: instance_id .* repeats line 1",
        ),
    ],
    ids=[
        "json",
        "not-object",
        "missing",
        "f2p-string",
        "p2p-object",
        "f2p-item",
        "version-float",
        "duplicate",
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(REAL_LINE) + "\n" + line + "\n")
    with pytest.raises(ForagerError, match=message):
        read_instances(path)


def test_undecodable_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(REAL_LINE).encode() + b'\n{"repo": "caf\xe9"}\n')
    with pytest.raises(InstanceError, match=r"latin\.jsonl:2: not UTF-8"):
        read_instances(path)
    with pytest.raises(InstanceError, match="cannot read SWE-bench instances"):
        read_instances(tmp_path / "absent.jsonl")


def test_instances_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Instance("o/r", "id", "abc", "", "", "statement", "", "", "", ("t",))  # type: ignore[misc]


def test_files_touched_covers_adds_deletes_renames_binary_and_quoted_names() -> None:
    patch = (
        "diff --git a/a file.txt b/a file.txt\n"
        "index 587be6b..1fe6cdc 100644\n"
        "--- a/a file.txt\n"
        "+++ b/a file.txt\n"
        "@@ -1 +1 @@\n"
        "-x\n"
        "+x2\n"
        "diff --git a/added.py b/added.py\n"
        "new file mode 100644\n"
        "index 0000000..ba2906d\n"
        "--- /dev/null\n"
        "+++ b/added.py\n"
        "@@ -0,0 +1 @@\n"
        "+n\n"
        "diff --git a/bin.dat b/bin.dat\n"
        "index 0bf0c6e..7d8ba09 100644\n"
        "GIT binary patch\n"
        "literal 6\n"
        "NcmZQzWMXDw000310RR91\n"
        "\n"
        "literal 6\n"
        "NcmZQzWMXDw000310RR91\n"
        "\n"
        'diff --git "a/caf\\303\\251 \\"q\\".py" "b/caf\\303\\251 \\"q\\".py"\n'
        "index 5ddbc6f..7a8b7d0 100644\n"
        '--- "a/caf\\303\\251 \\"q\\".py"\n'
        '+++ "b/caf\\303\\251 \\"q\\".py"\n'
        "@@ -1 +1 @@\n"
        "-z\n"
        "+z2\n"
        "diff --git a/gone.py b/gone.py\n"
        "deleted file mode 100644\n"
        "index 4a57c9b..0000000\n"
        "--- a/gone.py\n"
        "+++ /dev/null\n"
        "@@ -1 +0,0 @@\n"
        "-del\n"
        "diff --git a/old.py b/new.py\n"
        "similarity index 100%\n"
        "rename from old.py\n"
        "rename to new.py\n"
    )
    assert files_touched(patch) == [
        "a file.txt",
        "added.py",
        "bin.dat",
        'café "q".py',
        "gone.py",
        "old.py",
        "new.py",
    ]
    assert files_touched("") == []


def test_files_touched_rejects_a_broken_diff() -> None:
    broken = "--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n-a\n+b\n"
    with pytest.raises(InstanceError, match="not a unified diff"):
        files_touched(broken)


# ---- the official harness runs an exported task in Forager's own image ----------------------------

OPS = "def less_or_equal(a, b):\n    return a < b\n"
OPS_TESTS = (
    "from calc.ops import less_or_equal\n\n\n"
    "def test_less():\n    assert less_or_equal(1, 2)\n\n\n"
    "def test_not_more():\n    assert not less_or_equal(3, 2)\n"
)


@pytest.mark.docker
def test_the_official_harness_grades_an_exported_task_in_foragers_image_as_forager_does(
    builder, store, docker_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tasks export` → swebench's make_test_spec and run_instance (its container, its `git apply` in
    /testbed, the exported eval script, the exported log parser) → the same verdict and per-test outcomes
    as Forager's grader, for the gold patch, no patch, and a patch that edits the tests instead."""
    import uuid

    from swebench.harness.run_evaluation import run_instance
    from swebench.harness.utils import load_swebench_dataset, make_test_spec

    from envs.docker_backend import DockerBackend
    from envs.issue_import import import_instances
    from envs.tasks import grade_task
    from tests.cli import forager
    from tests.repos import PYPROJECT, commit, make_repo

    files = {
        "pyproject.toml": PYPROJECT.format(name="calc", dependencies=""),
        "src/calc/__init__.py": "",
        "src/calc/ops.py": OPS,
        "tests/test_ops.py": OPS_TESTS,
    }
    repo = make_repo(tmp_path / "repos" / "calc", files)
    base = repo.head.commit.hexsha
    regression = "\n\ndef test_equal():\n    assert less_or_equal(2, 2)\n"
    commit(repo, {"src/calc/ops.py": OPS.replace("<", "<="), "tests/test_ops.py": OPS_TESTS + regression},
           "Fix")  # fmt: skip
    gold = repo.git.diff(base, "HEAD", "--", "src") + "\n"
    instance = {
        "repo": "calc", "instance_id": "calc__calc-1", "base_commit": base, "patch": gold,
        "test_patch": repo.git.diff(base, "HEAD", "--", "tests") + "\n",
        "problem_statement": "less_or_equal(2, 2) is False",
        "FAIL_TO_PASS": ["tests/test_ops.py::test_equal"],
        "PASS_TO_PASS": ["tests/test_ops.py::test_less", "tests/test_ops.py::test_not_more"],
    }  # fmt: skip
    (tmp_path / "in.jsonl").write_text(json.dumps(instance) + "\n")
    backend = DockerBackend(docker_client)
    source = str(tmp_path / "repos" / "{repo}")
    instances = read_instances(tmp_path / "in.jsonl")
    (result,) = import_instances(builder, store, backend, instances, source=source)
    assert result.status == "verified", result.reason
    out = str(tmp_path / "out" / "tasks.jsonl")  # a missing folder: created
    exported = forager("tasks", "export", out, home=tmp_path, env={"FORAGER_DB": store.url})
    assert exported.returncode == 0, exported.stderr
    (task_line,) = load_swebench_dataset(out, "test")
    spec = make_test_spec(task_line)
    task = store.get_task("calc__calc-1")
    assert spec.image == task.image.tag

    edits_tests = (
        "--- a/tests/test_ops.py\n+++ b/tests/test_ops.py\n@@ -4,3 +4,3 @@\n"
        " def test_less():\n-    assert less_or_equal(1, 2)\n+    assert True\n \n"
    )
    monkeypatch.chdir(tmp_path)  # the harness writes its logs under ./logs
    run_id = f"forager-{uuid.uuid4().hex[:8]}"
    for name, patch, resolved in (("gold", gold, True), ("empty", "", False), ("tests", edits_tests, False)):
        ours = grade_task(backend, task, task.image, patch, timeout=300, episode=f"harness-{run_id}")
        prediction = {"instance_id": spec.instance_id, "model_name_or_path": name, "model_patch": patch}
        _, report = run_instance(spec, prediction, docker_client, run_id, timeout=300)
        theirs = report[spec.instance_id]
        assert (theirs["resolved"], ours.resolved) == (resolved, resolved), (name, theirs, ours.log_tail)
        status = theirs["tests_status"]
        for field, outcomes in (("FAIL_TO_PASS", ours.fail_to_pass), ("PASS_TO_PASS", ours.pass_to_pass)):
            assert sorted(status[field]["success"]) == sorted(t for t, o in outcomes.items() if o == "passed")
            assert sorted(status[field]["failure"]) == sorted(t for t, o in outcomes.items() if o != "passed")
