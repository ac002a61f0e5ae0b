"""The store against real databases: a SQLite file, and PostgreSQL (tests marked ``postgres``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc

from core.errors import ForagerError
from storage import (
    Base,
    Episode,
    EpisodeFilter,
    EpisodeStatus,
    Image,
    ImageStatus,
    Repository,
    SchemaError,
    Step,
    Store,
    StoreError,
    Task,
    TaskKind,
    TaskStatus,
)
from storage.migrations import alembic_config, script_directory
from storage.store import SQLITE_BUSY_TIMEOUT_MS

# Repetitive like real tool output, with what breaks naive storage: non-ASCII, NUL (PostgreSQL text
# rejects it), ANSI escapes, CRLF, and a lone surrogate (a byte decoded with surrogateescape).
OBSERVATION = (
    "$ python -m pytest -q\n"
    + "tests/test_ünïcödé.py::test_日本語 FAILED ✗ AssertionError: 1 != 2\n" * 400
    + "\x00\x1b[31mred\x1b[0m\r\n\ufffd\udcff \U0001f600"
)
PATCH = "--- a/src/m.py\n+++ b/src/m.py\n@@ -1 +1 @@\n-return a < b\n+return a <= b  # ≤ café\n"

REPO = Path(__file__).resolve().parents[1]
#: The latest schema revision, which a new database is created at.
HEAD = script_directory().get_current_head()

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _drop_everything(url: str) -> None:
    """Drop every table, alembic_version included."""
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        metadata.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a new SQLite file in a directory that does not exist yet, or the
    test PostgreSQL database emptied before and after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'not' / 'yet' / 'forager.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    _drop_everything(url)
    yield url
    _drop_everything(url)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store(db_url) as store:
        yield store


def _now(minutes: int = 0) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def _image(store: Store, tag: str = "forager/attrs:1", name: str = "attrs", **fields: object) -> Image:
    repository = store.get_or_create_repository(f"pypi:{name}==1.0", name)
    values: dict[str, object] = {
        "status": ImageStatus.READY,
        "base_image": "python:3.11-slim",
        "recipe": {"install": ["pip install -e ."]},
        "recipe_hash": "abc123",
    }
    values.update(fields)
    return store.save_image(Image(repository_id=repository.id, tag=tag, **values))


def _task(store: Store, image: Image, instance_id: str = "attrs-1", **fields: object) -> Task:
    values: dict[str, object] = {"kind": TaskKind.MUTATE_FIX, "problem_statement": "Fix it."}
    values.update(fields)
    (task,) = store.add_tasks([Task(instance_id=instance_id, image_id=image.id, **values)])
    return task


def _episode(task: Task, **fields: object) -> Episode:
    values: dict[str, object] = {
        "model": "qwen-7b",
        "action_format": "openai",
        "status": EpisodeStatus.COMPLETED,
        "exit_reason": "submitted",
        "started_at": _now(-5),
        "finished_at": _now(),
    }
    values.update(fields)
    return Episode(task_id=task.id, **values)


def _steps(n: int) -> list[Step]:
    return [
        Step(index=i, action={"tool": "bash", "arguments": {"cmd": f"ls {i}"}}, observation="ok")
        for i in range(n)
    ]


def _core_counts(store: Store) -> dict[str, int]:
    """Rows of the tables this file is about (later revisions add others)."""
    counts = store.counts()
    return {table: counts[table] for table in ("repositories", "images", "tasks", "episodes", "steps")}


def _schema_diff(store: Store) -> list[object]:
    """What autogenerate would change to turn the database's schema into the models' (nothing, ideally)."""
    with store.session() as session:
        context = MigrationContext.configure(session.connection(), opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def _downgrade_to_base(store: Store) -> None:
    """Run every migration's downgrade: no tables are left but an empty alembic_version."""
    with store.session() as session:
        command.downgrade(alembic_config(session.connection()), "base")


# ---- opening and schema ------------------------------------------------------------------------------


def test_an_empty_database_is_created_at_the_latest_revision(db_url: str) -> None:
    with Store(db_url) as store:
        assert store.schema_revision() == store.head_revision() == HEAD
        counts = store.counts()
        assert {"repositories", "images", "tasks", "episodes", "steps"} <= set(counts)
        assert not any(counts.values())
        password = sa.make_url(db_url).password
        if password:
            assert ":***@" in store.url
            assert f":{password}@" not in store.url
    # Opening it again finds it at head and changes nothing.
    with Store(db_url) as store:
        assert store.schema_revision() == HEAD


def test_migrations_produce_exactly_the_models_schema(store: Store) -> None:
    assert _schema_diff(store) == []


def test_a_database_behind_head_needs_an_explicit_upgrade(db_url: str) -> None:
    with Store(db_url) as store:
        _downgrade_to_base(store)
        assert store.schema_revision() is None
    with pytest.raises(SchemaError, match="forager db upgrade") as info:
        Store(db_url)
    assert "revision base" in str(info.value)

    with Store(db_url, upgrade=True) as store:
        assert store.schema_revision() == store.head_revision()
        assert _schema_diff(store) == []
        # The same through the method, on an open store.
        _downgrade_to_base(store)
        store.upgrade()
        assert store.schema_revision() == store.head_revision()
        assert _schema_diff(store) == []


def test_a_database_at_an_unknown_newer_revision_is_refused(store: Store, db_url: str) -> None:
    with store.session() as session:
        session.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    for upgrade in (False, True):
        with pytest.raises(SchemaError) as info:
            Store(db_url, upgrade=upgrade)
        message = str(info.value)
        assert f"revision 0999, which is newer than this Forager knows (latest: {HEAD})" in message
        assert "upgrade Forager or use another database" in message


def test_workers_opening_a_new_database_at_once_create_the_schema_once(db_url: str) -> None:
    # Separate processes, released together once imported, all finding the database empty.
    opener = (
        "import sys, time; from storage import Store; time.sleep(max(0, float(sys.argv[2]) - time.time())); "
        "print(Store(sys.argv[1]).schema_revision())"
    )
    start = str(time.time() + 2)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", opener, db_url, start],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(*worker.communicate(timeout=60), worker.returncode) for worker in workers]
    assert [(out.strip(), code) for out, _, code in results] == [(HEAD, 0)] * 4, [
        err for _, err, _ in results
    ]


def test_tables_without_a_forager_revision_are_refused(db_url: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    engine = sa.create_engine(other)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    engine.dispose()
    # Forager's own tables whose revision stamp was removed: migrating from nothing would collide.
    with Store(db_url) as store, store.session() as session:
        command.stamp(alembic_config(session.connection()), "base")

    for url in (other, db_url):
        for upgrade in (False, True):
            with pytest.raises(SchemaError, match="holds tables but no Forager schema revision: choose an"):
                Store(url, upgrade=upgrade)


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'f.db'}") as store:
        # The connection that ran the migrations (with foreign keys off) is back in the pool: reused here.
        with store.session() as session:
            assert session.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert session.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1
            assert session.execute(sa.text("PRAGMA busy_timeout")).scalar_one() == SQLITE_BUSY_TIMEOUT_MS
        with pytest.raises(StoreError, match="rejected the change"), store.session() as session:
            session.add(Step(episode_id="no-such-episode", index=0, action={}, observation=""))
        assert store.counts()["steps"] == 0


def test_a_corrupt_sqlite_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "forager.db"
    content = b"this is not a database\n" * 100
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{path}")
    assert str(info.value) == (
        f"{path} is not a SQLite database or is corrupt: move it aside or choose another with --db"
    )
    assert path.read_bytes() == content


def test_an_unreachable_postgres_server_fails_fast_with_a_clear_message() -> None:
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        Store(f"postgresql://forager:s3cret@127.0.0.1:{port}/forager?connect_timeout=3")
    assert time.monotonic() - start < 5
    assert str(info.value) == (
        f"cannot reach database postgresql+psycopg://forager:***@127.0.0.1:{port}/forager?connect_timeout=3: "
        "connection refused. Is the server running? Check --db / FORAGER_DB"
    )


@pytest.mark.postgres
def test_postgres_urls_default_to_psycopg_and_bad_credentials_are_explained(postgres_url: str) -> None:
    url = sa.make_url(postgres_url)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    _drop_everything(postgres_url)
    try:
        with Store(plain) as store:
            assert store.url.startswith("postgresql+psycopg://")
    finally:
        _drop_everything(postgres_url)
    wrong = url.set(password="not-the-password").render_as_string(hide_password=False)
    with pytest.raises(StoreError, match="Check the user, password and database name") as info:
        Store(wrong)
    assert "not-the-password" not in str(info.value)


def test_invalid_and_unsupported_urls_are_explained() -> None:
    with pytest.raises(StoreError, match=r"invalid database URL 'not a url': use sqlite:///PATH"):
        Store("not a url")
    with pytest.raises(StoreError, match="unsupported database URL 'mysql://u:\\*\\*\\*@h/db'") as info:
        Store("mysql://u:pw@h/db")
    assert isinstance(info.value, ForagerError)


def test_a_missing_postgres_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(StoreError) as info:
        Store("postgresql://u:p@127.0.0.1/db")
    assert str(info.value) == "PostgreSQL needs the psycopg driver: pip install 'forager[postgres]'"


# ---- records -----------------------------------------------------------------------------------------


def _assert_fields(record: object, fields: dict[str, object]) -> None:
    for key, value in fields.items():
        assert getattr(record, key) == value, key


def test_every_table_round_trips(store: Store) -> None:
    repository = store.get_or_create_repository("https://github.com/o/r", "o/r", "0123abcd")
    image_fields: dict[str, object] = {
        "repository_id": repository.id,
        "tag": "forager/o-r:0123abcd",
        "docker_id": "sha256:feed",
        "status": ImageStatus.READY,
        "failure_class": None,
        "base_image": "python:3.11-slim",
        "recipe": {"install": ["pip install -e '.[test]'"], "env": {"LANG": "C.UTF-8"}},
        "recipe_hash": "9f86d081",
        "test_command": "python -m pytest -rA",
        "baseline": {"tests/test_ü.py::test_日本": "passed", "tests/test_a.py::test_b": "failed"},
        "flaky": ["tests/test_a.py::test_flaky"],
        "tests_passed": 1,
        "tests_total": 2,
        "size_bytes": 5 * 2**30,  # beyond 32 bits
        "unique_bytes": 123,
        "build_seconds": 81.5,
        "log_path": "/logs/o-r.log",
        "log_tail": OBSERVATION,
    }
    image = store.save_image(Image(**image_fields))
    task_fields: dict[str, object] = {
        "instance_id": "o__r-mutate-1",
        "kind": TaskKind.MUTATE_FIX,
        "image_id": image.id,
        "status": TaskStatus.VERIFIED,
        "setup_patch": PATCH,
        "gold_patch": PATCH.replace("<=", "<"),
        "test_patch": "",
        "problem_statement": "`a <= b` fails for équal values — 等しい",
        "fail_to_pass": ["tests/test_a.py::test_b"],
        "pass_to_pass": ["tests/test_ü.py::test_日本"],
        "meta": {"operator": "swap_compare", "file": "src/m.py", "line": 1, "extra": [1, 2.5, None, True]},
    }
    (task,) = store.add_tasks([Task(**task_fields)])
    episode_fields: dict[str, object] = {
        "task_id": task.id,
        "model": "qwen-7b",
        "policy": "oracle",
        "action_format": "openai",
        "status": EpisodeStatus.COMPLETED,
        "exit_reason": "submitted",
        "resolved": True,
        "reward": 1.0,
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "final_patch": PATCH,
        "grade": {"tests/test_a.py::test_b": "passed", "résumé": "✓"},
        "config": {"temperature": 0.7, "max_turns": 30},
        "started_at": _now(-3),
        "finished_at": _now(),
    }
    episode = Episode(**episode_fields)
    step_fields: list[dict[str, object]] = [
        {
            "index": 0,
            "thought": "Let me run the tests — ✓",
            "action": {"tool": "bash", "arguments": {"cmd": "pytest -q"}},
            "observation": OBSERVATION,
            "model_seconds": 1.25,
            "tool_seconds": 3.5,
            "prompt_tokens": 1000,
            "completion_tokens": 40,
        },
        {
            "index": 1,
            "thought": None,
            "action": "<tool_call>bash {unparsable ✗",  # a format error keeps the raw text
            "observation": "format error",
            "model_seconds": 0.0,
            "tool_seconds": 0.0,
            "prompt_tokens": None,
            "completion_tokens": None,
        },
    ]
    store.save_episode(episode, [Step(**fields) for fields in step_fields])

    # Each read is a new session: what comes back was decoded from the database, not remembered.
    stored_image = store.get_image(image.tag)
    assert stored_image is not None
    _assert_fields(stored_image, {"id": image.id, **image_fields})
    assert stored_image.created_at.tzinfo == UTC and stored_image.updated_at.tzinfo == UTC
    assert stored_image.repository.source == "https://github.com/o/r"  # loaded: usable after the session
    assert stored_image.repository.commit == "0123abcd"
    assert store.get_image(image.id) is not None

    stored_task = store.get_task("o__r-mutate-1")
    assert stored_task is not None
    _assert_fields(stored_task, {"id": task.id, **task_fields})
    assert stored_task.image.repository.name == "o/r"
    assert store.get_task(task.id) is not None

    stored = store.get_episode(episode.id)
    assert stored is not None
    _assert_fields(stored, {"id": episode.id, "n_steps": 2, **episode_fields})
    assert stored.created_at.tzinfo == UTC
    assert stored.task.instance_id == "o__r-mutate-1"
    assert len(stored.steps) == 2
    for stored_step, fields in zip(stored.steps, step_fields, strict=True):
        _assert_fields(stored_step, {"episode_id": episode.id, **fields})

    assert _core_counts(store) == {"repositories": 1, "images": 1, "tasks": 1, "episodes": 1, "steps": 2}
    assert "forager/o-r:0123abcd" in repr(stored_image)
    assert episode.id in repr(stored) and "submitted" in repr(stored)


def test_large_text_is_stored_compressed_in_the_row_and_absent_json_as_null(store: Store) -> None:
    task = _task(store, _image(store))
    episode = _episode(task, grade=None)
    store.save_episode(episode, [Step(index=0, action={"tool": "bash"}, observation=OBSERVATION)])
    with store.session() as session:
        raw = session.execute(sa.text("SELECT observation FROM steps")).scalar_one()
        grade_is_null = session.execute(sa.text("SELECT grade IS NULL FROM episodes")).scalar_one()
    assert zlib.decompress(raw).decode("utf-8", "surrogatepass") == OBSERVATION
    assert len(raw) * 10 < len(OBSERVATION.encode("utf-8", "surrogatepass"))
    assert grade_is_null  # SQL NULL, not the JSON literal null


def test_naive_timestamps_are_refused(store: Store) -> None:
    task = _task(store, _image(store))
    with pytest.raises(sa_exc.StatementError, match="naive datetime"):
        store.save_episode(_episode(task, started_at=datetime.now()), [])  # naive: the point
    assert store.counts()["episodes"] == 0


def test_get_or_create_repository_returns_the_stored_one(store: Store) -> None:
    attrs = store.get_or_create_repository("pypi:attrs==23.1.0", "attrs")
    assert store.get_or_create_repository("pypi:attrs==23.1.0", "renamed").id == attrs.id
    assert store.get_or_create_repository("pypi:attrs==23.1.0", "attrs").name == "attrs"
    at_commit = store.get_or_create_repository("pypi:attrs==23.1.0", "attrs", "abc")
    assert at_commit.id != attrs.id
    assert store.get_or_create_repository("pypi:attrs==23.1.0", "attrs", "abc").id == at_commit.id
    assert store.counts()["repositories"] == 2
    assert attrs.created_at.tzinfo == UTC


def test_save_image_inserts_then_updates_by_tag(store: Store) -> None:
    first = _image(store, status=ImageStatus.BUILDING, log_tail="building…")
    assert first.id is not None and first.tests_total == 0 and first.baseline == {}

    update = Image(tag=first.tag, status=ImageStatus.FAILED, failure_class="no_tests_found", log_tail="✗")
    stored = store.save_image(update)
    assert update.id == stored.id == first.id
    assert (stored.status, stored.failure_class, stored.log_tail) == (
        ImageStatus.FAILED,
        "no_tests_found",
        "✗",
    )
    assert stored.recipe == first.recipe  # not set on the update: kept
    assert stored.created_at == first.created_at
    assert stored.updated_at >= first.updated_at
    assert stored.repository.name == "attrs"
    assert store.counts()["images"] == 1


def test_delete_image_keeps_images_that_tasks_use(store: Store) -> None:
    unused = _image(store, tag="forager/unused:1")
    used = _image(store, tag="forager/used:1")
    _task(store, used)
    assert store.delete_image(unused.tag) is True
    assert store.get_image(unused.id) is None
    assert store.delete_image(unused.tag) is False
    with pytest.raises(StoreError, match="cannot be deleted: 1 tasks use it"):
        store.delete_image(used.id)
    assert store.get_image(used.id) is not None


def test_add_tasks_refuses_stored_or_repeated_instance_ids_and_adds_none(store: Store) -> None:
    image = _image(store)
    _task(store, image, "attrs-1")
    batch = [
        Task(instance_id=name, image_id=image.id, kind=TaskKind.ISSUE_FIX, problem_statement="p")
        for name in ("attrs-2", "attrs-1", "attrs-3", "attrs-3")
    ]
    with pytest.raises(
        StoreError, match=r"2 task instance ids are already stored or repeated \(attrs-1, attrs-3\)"
    ):
        store.add_tasks(batch)
    assert [task.instance_id for task in store.list_tasks()] == ["attrs-1"]
    assert store.get_task("nope") is None and store.get_task(10**6) is None


def test_save_episode_stores_the_episode_and_its_steps_or_nothing(store: Store) -> None:
    task = _task(store, _image(store))
    episode = _episode(task)
    steps = _steps(3)
    steps[2].index = 1  # the database rejects the third step, after the episode row was written
    with pytest.raises(StoreError, match="rejected the change"):
        store.save_episode(episode, steps)
    assert store.get_episode(episode.id) is None
    assert store.counts()["episodes"] == store.counts()["steps"] == 0

    # Nothing of the failed attempt remains to collide with: the same id can be stored.
    store.save_episode(_episode(task, id=episode.id), _steps(3))
    saved = store.get_episode(episode.id)
    assert saved is not None and [step.index for step in saved.steps] == [0, 1, 2]


def test_an_episode_is_stored_once(store: Store) -> None:
    task = _task(store, _image(store))
    episode = store.save_episode(_episode(task), _steps(1))
    with pytest.raises(StoreError, match=f"episode {episode.id} is already stored"):
        store.save_episode(_episode(task, id=episode.id), _steps(2))
    stored = store.get_episode(episode.id)
    assert stored is not None and stored.n_steps == 1


def test_episode_ids_are_made_before_insert() -> None:
    first, second = Episode(), Episode()
    assert len(first.id) == 32 and int(first.id, 16) >= 0
    assert first.id != second.id
    assert Episode(id="mine").id == "mine"


def test_deleting_an_episode_deletes_its_steps_in_the_database(store: Store) -> None:
    task = _task(store, _image(store))
    kept = store.save_episode(_episode(task), _steps(2))
    gone = store.save_episode(_episode(task), _steps(3))
    with store.session() as session:  # a plain SQL DELETE: only ON DELETE CASCADE removes the steps
        session.execute(sa.delete(Episode).where(Episode.id == gone.id))
    assert store.counts()["steps"] == 2
    stored = store.get_episode(kept.id)
    assert stored is not None and len(stored.steps) == 2


def test_list_filters(store: Store) -> None:
    ready = _image(store, tag="forager/attrs:1", name="attrs")
    failed = _image(store, tag="forager/widgets:1", name="acme/widgets", status=ImageStatus.FAILED)
    building = _image(store, tag="forager/attrs:2", name="attrs", status="building")
    assert [i.tag for i in store.list_images()] == [ready.tag, failed.tag, building.tag]
    assert [i.tag for i in store.list_images(status=ImageStatus.READY)] == [ready.tag]
    assert [i.tag for i in store.list_images(status="failed")] == [failed.tag]
    assert [i.tag for i in store.list_images(name="attrs")] == [ready.tag, building.tag]
    assert [i.tag for i in store.list_images(status="building", name="attrs")] == [building.tag]
    assert store.list_images(name="nobody") == []

    mutated = _task(store, ready, "attrs-m1")
    issue = _task(store, ready, "attrs-i1", kind=TaskKind.ISSUE_FIX, status=TaskStatus.VERIFIED)
    other = _task(store, failed, "widgets-m1", status=TaskStatus.INVALID)
    assert [t.instance_id for t in store.list_tasks(kind="mutate_fix")] == ["attrs-m1", "widgets-m1"]
    assert [t.instance_id for t in store.list_tasks(kind=TaskKind.ISSUE_FIX)] == ["attrs-i1"]
    assert [t.instance_id for t in store.list_tasks(image_id=ready.id)] == ["attrs-m1", "attrs-i1"]
    assert [t.instance_id for t in store.list_tasks(status="invalid")] == ["widgets-m1"]
    assert store.list_tasks(kind="mutate_fix", image_id=ready.id, status="unverified")[0].id == mutated.id
    assert store.list_tasks()[2].image.repository.name == "acme/widgets"

    resolved = store.save_episode(_episode(mutated, resolved=True, created_at=_now(-3)), [])
    unresolved = store.save_episode(_episode(mutated, model="gpt-x", resolved=False, created_at=_now(-2)), [])
    ungraded = store.save_episode(
        _episode(issue, status=EpisodeStatus.FAILED, exit_reason="infra_error", created_at=_now(-1)), []
    )

    def ids(episodes: list[Episode]) -> list[str]:
        return [episode.id for episode in episodes]

    def listed(**fields: object) -> list[str]:
        return ids(store.list_episodes(EpisodeFilter(**fields)))  # type: ignore[arg-type]

    assert ids(store.list_episodes()) == [resolved.id, unresolved.id, ungraded.id]
    assert listed(task_id=mutated.id) == [resolved.id, unresolved.id]
    assert listed(task_id=other.id) == []
    assert listed(model="gpt-x") == [unresolved.id]
    assert listed(status="failed") == [ungraded.id]
    assert listed(resolved=True) == [resolved.id]
    assert listed(resolved=False) == [unresolved.id]
    assert listed(model="qwen-7b", status=EpisodeStatus.COMPLETED) == [resolved.id]
    assert store.list_episodes()[2].task.instance_id == "attrs-i1"


def test_repr_helps_debugging() -> None:
    repository = Repository(id=3, source="pypi:attrs==23.1.0", name="attrs", commit=None)
    assert repr(repository) == "<Repository 3 'attrs' source='pypi:attrs==23.1.0' commit=None>"
    step = Step(episode_id="e1", index=4, action={"tool": "bash"})
    assert repr(step) == "<Step e1#4 action={'tool': 'bash'}>"
