"""The command line as a user meets it: the real ``forager`` entry point in a subprocess."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from envs.backend import EPISODE_LABEL
from forager.cli.envs import parse_duration
from images.base import BASE_IMAGE
from images.engine import OWNER_LABEL, build_container_name, owner_labels
from tests.cli import forager


def test_help_lists_every_command_group(tmp_path: Path) -> None:
    result = forager("--help", home=tmp_path)
    assert result.returncode == 0
    for group in ("images", "tasks", "episode", "forage", "db", "envs", "k8s", "serve", "doctor"):
        assert f" {group} " in result.stdout, group
    assert "--db" in result.stdout and "--home" in result.stdout


def test_db_info_on_a_new_home_creates_the_latest_schema(tmp_path: Path) -> None:
    result = forager("db", "info", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["revision"] == info["latest"] is not None
    assert set(info["rows"]) >= {"repositories", "images", "tasks", "episodes", "steps"}
    assert (tmp_path / "forager.db").is_file()


def test_db_url_from_environment_variable(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    result = forager("db", "upgrade", home=tmp_path / "home", env={"FORAGER_DB": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    assert db.is_file()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://nobody:secret@127.0.0.1:9/none", "cannot reach"),
        ("notadb://what", "URL"),
    ],
)
def test_bad_database_is_one_clear_line(tmp_path: Path, url: str, expected: str) -> None:
    result = forager("--db", url, "db", "info", home=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr
    assert "secret" not in result.stderr


def test_corrupt_sqlite_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "forager.db").write_bytes(b"this is not a database" * 100)
    result = forager("db", "info", home=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "forager.db" in result.stderr and "--db" in result.stderr


def test_doctor_without_an_engine_says_what_to_do(tmp_path: Path) -> None:
    result = forager("doctor", "--json", home=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert result.returncode == 1
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert checks["docker engine"]["status"] == "fail"
    assert "scripts/setup.sh" in checks["docker engine"]["fix"]
    assert checks["base image"]["status"] == "fail"
    assert checks["database"]["status"] == "ok"


@pytest.mark.docker
def test_doctor_is_all_green_on_a_set_up_machine(docker_client, tmp_path: Path) -> None:
    result = forager("doctor", home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout


def test_durations() -> None:
    assert parse_duration("2h").total_seconds() == 7200
    assert parse_duration("90").total_seconds() == 90
    assert parse_duration("1.5m").total_seconds() == 90
    with pytest.raises(Exception, match="not a duration"):
        parse_duration("two hours")


def test_an_unknown_mutation_operator_is_refused_before_any_work(tmp_path: Path) -> None:
    result = forager("tasks", "mutate", "--operators", "comparison_operator_replaced,typo", home=tmp_path)
    assert result.returncode == 2
    assert "unknown ['typo']" in result.stderr and "function_body_removed" in result.stderr


@pytest.mark.docker
def test_envs_gc_removes_what_exited_processes_left_and_by_age_or_all_the_rest(
    docker_client, tmp_path: Path
) -> None:
    # The owner labels of a real Forager-importing process that has exited since.
    exited = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json; from images.engine import owner_labels as o; print(json.dumps(o()))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # Every gc below is narrowed to this label: the engine is shared with other tests and test runs, whose
    # containers (running, or deliberately leaked by exited owners) are not this test's to remove.
    drill = f"forager-test.drill={uuid.uuid4().hex}"
    leaked: list[str] = []

    def leak(labels: dict[str, str], name: str | None = None, label: str | None = drill) -> str:
        key, _, value = (label or "=").partition("=")
        container = docker_client.containers.run(
            BASE_IMAGE, ["sleep", "600"], detach=True, network_mode="none", name=name,
            labels={**labels, **({key: value} if label else {})},
        )  # fmt: skip
        leaked.append(container.id)
        return container.id

    def removed(*args: str) -> dict[str, tuple[str, str]]:
        result = forager("envs", "gc", "--json", "--label", drill, *args, home=tmp_path)
        assert result.returncode == 0, result.stderr
        return {r["id"]: (r["kind"], r["reason"]) for r in json.loads(result.stdout)}

    episode = leak({EPISODE_LABEL: "leaked", **exited})
    build = leak(exited, name=build_container_name("leaked"))
    running = leak({EPISODE_LABEL: "running", **owner_labels()})
    foreign = leak({EPISODE_LABEL: "elsewhere", OWNER_LABEL: "another-machine:1:1"})
    bystander = leak(exited, name=f"not-forager-{episode[:8]}")
    unlabelled = leak({EPISODE_LABEL: "outside", **owner_labels()}, label=None)
    try:
        assert removed() == {episode: ("episode", "owner exited"), build: ("build", "owner exited")}
        assert removed("--older-than", "1h") == {}, "young containers of unknown owners stay"
        assert removed("--older-than", "0s") == {foreign: ("episode", "older than 0:00:00")}
        assert removed("--all") == {running: ("episode", "all")}
        left = {c.id for c in docker_client.containers.list(all=True, filters={"id": leaked})}
        assert bystander in left, "only Forager's"
        assert unlabelled in left, "only the label's"
        bad = forager("envs", "gc", "--label", "a,b=c", home=tmp_path)
        assert bad.returncode == 2 and "not a label" in bad.stderr
    finally:
        for container in docker_client.containers.list(all=True, filters={"id": leaked}):
            container.remove(force=True)
