"""``db stats`` of all episodes comes from the rollup the database keeps (``storage.rollup``): it must
say exactly what aggregating the episodes says, after inserts through the ORM and in bulk, updates and
deletes, and after migration 0005 fills it from a database that held episodes. SQLite, and PostgreSQL
under the ``postgres`` marker."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command

from storage import Episode, EpisodeFilter, EpisodeStatus, Store, StoreStats, TaskKind
from storage.migrations import alembic_config
from storage.rollup import StatsOutcome, StatsTask, StatsValue
from tests import test_storage
from tests.test_storage import _episode, _image, _schema_diff, _steps, _task

db_url = test_storage.db_url
store = test_storage.store

#: The episode columns copied from the task at insert.
COPIES = {"repository", "task_kind", "origin"}
#: A filter that selects every episode, so that statistics are aggregated from the episodes themselves.
EVERYTHING = EpisodeFilter(since=datetime(2000, 1, 1, tzinfo=UTC))


def _aggregated(store: Store) -> dict[str, object]:
    """The statistics of all episodes as aggregated from the episodes (not the rollup), without the filter."""
    return {**store.stats(EVERYTHING).to_json(), "filter": {}}


def _fill(store: Store, rng: random.Random, n: int) -> list[Episode]:
    """``n`` random episodes over two repositories, four origins and three models, saved one by one."""
    attrs = _image(store, tag="forager/attrs:1", name="attrs")
    widgets = _image(store, tag="forager/widgets:1", name="acme/widgets")
    tasks = [
        _task(store, attrs, "a-swap", meta={"operator": "swap_compare"}),
        _task(store, attrs, "a-swap-2", meta={"operator": "swap_compare"}),
        _task(store, widgets, "w-negate", meta={"operator": "negate_condition"}),
        _task(store, attrs, "a-mined", kind=TaskKind.ISSUE_FIX, meta={"commit": "abc"}),
        _task(store, widgets, "w-imported", kind=TaskKind.ISSUE_FIX, meta={"repo": "acme/w"}),
    ]
    return [store.save_episode(_random_episode(rng, rng.choice(tasks).id), _steps(0)) for _ in range(n)]


def _random_episode(rng: random.Random, task_id: int, **fields: object) -> Episode:
    resolved = rng.choice([True, False, False, None])
    values: dict[str, object] = {
        "task_id": task_id,
        "model": rng.choice(["qwen", "gpt", "llama"]),
        "action_format": "function_calling",
        "status": EpisodeStatus.FAILED if resolved is None else EpisodeStatus.COMPLETED,
        "exit_reason": "infra_error" if resolved is None else rng.choice(["submitted", "max_turns"]),
        "resolved": resolved,
        "n_steps": rng.randint(0, 40),
        # Below 1,000 (exact), and in each decade up to millions (three significant digits).
        "prompt_tokens": rng.choice(
            [rng.randint(0, 999), rng.randint(1000, 10**4), rng.randint(0, 3 * 10**6)]
        ),
        "completion_tokens": rng.randint(0, 5000),
        "started_at": datetime.now(UTC) - timedelta(minutes=5),
        "finished_at": datetime.now(UTC),
    }
    values.update(fields)
    return Episode(**values)


def test_stats_of_all_episodes_read_the_rollup_and_agree_with_the_episodes(store: Store) -> None:
    rng = random.Random(11)
    saved = _fill(store, rng, 120)
    task_ids = sorted({episode.task_id for episode in saved})
    rolled = store.stats()
    assert rolled.total.episodes == 120 and rolled.total.tasks == len(task_ids)
    assert rolled.to_json() == _aggregated(store)
    assert {group.key for group in rolled.by_origin} == {
        "swap_compare",
        "negate_condition",
        "mined",
        "imported",
    }

    # A bulk insert (one statement, many rows), as bench/export.py writes; the copies of the task fields
    # are filled by the column defaults, once per task.
    fields = [column.key for column in Episode.__table__.columns if column.key not in COPIES]
    fresh = [_random_episode(rng, rng.choice(task_ids)) for _ in range(80)]
    rows = [
        {key: getattr(episode, key) for key in fields if getattr(episode, key) is not None}
        for episode in fresh
    ]
    with store.session() as session:
        session.execute(sa.insert(Episode), rows)
    assert store.count_episodes(EpisodeFilter(repository="acme/widgets")) == sum(
        1
        for episode in store.iter_episodes(with_steps=False)
        if episode.task.image.repository.name == "acme/widgets"
    )
    assert store.stats().to_json() == _aggregated(store)

    # Updates move an episode between groups; deletes take it away.
    with store.session() as session:
        session.execute(
            sa.update(Episode)
            .where(Episode.id.in_([episode.id for episode in saved[:30]]))
            .values(resolved=True, exit_reason="submitted", n_steps=Episode.n_steps + 1, model="gpt")
        )
        session.execute(sa.update(Episode).where(Episode.id == saved[30].id).values(task_id=task_ids[0]))
        session.execute(sa.delete(Episode).where(Episode.id.in_([episode.id for episode in saved[40:70]])))
    after = store.stats()
    assert after.total.episodes == 170
    # Counting every episode and step reads the rollup too.
    remaining = list(store.iter_episodes(with_steps=False))
    assert store.count_episodes() == store.counts()["episodes"] == len(remaining) == 170
    # Counts are ints on every database (PostgreSQL's sum is a numeric; the viewer printed "170.00").
    assert type(store.count_episodes()) is type(store.counts()["steps"]) is int
    assert store.counts()["steps"] == sum(episode.n_steps for episode in remaining)
    assert after.to_json() == _aggregated(store)

    with store.session() as session:
        session.execute(sa.delete(Episode))
    empty = store.stats()
    assert (empty.total.episodes, empty.total.tasks, empty.by_model) == (0, 0, [])
    assert empty.to_json() == _aggregated(store)


def test_concurrent_writers_keep_the_rollup_exact(store: Store) -> None:
    """Workers storing episodes at once (PostgreSQL: row locks on the shared rollup rows, taken in key
    order) neither deadlock nor lose a count."""
    saved = _fill(store, random.Random(1), 5)
    task_ids = sorted({episode.task_id for episode in saved})

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            store.save_episode(_random_episode(rng, rng.choice(task_ids)), _steps(1))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    assert store.stats().total.episodes == 65
    assert store.stats().to_json() == _aggregated(store)


def test_episodes_carry_copies_of_their_task_fields(store: Store) -> None:
    image = _image(store, name="acme/widgets")
    mutated = _task(store, image, "w-1", meta={"operator": "off_by_one"})
    mined = _task(store, image, "w-2", kind=TaskKind.ISSUE_FIX, meta={"commit": "abc"})
    saved = store.save_episode(_episode(mutated), _steps(1))
    assert (saved.repository, saved.task_kind, saved.origin) == ("acme/widgets", "mutate_fix", "off_by_one")
    with store.session() as session:
        session.execute(sa.insert(Episode), [_row(mined, "e-bulk")])
    stored = store.get_episode("e-bulk")
    assert stored is not None
    assert (stored.repository, stored.task_kind, stored.origin) == ("acme/widgets", "issue_fix", "mined")
    assert [e.id for e in store.list_episodes(EpisodeFilter(operator="off_by_one"))] == [saved.id]
    assert [e.id for e in store.list_episodes(EpisodeFilter(task_kind="issue_fix"))] == ["e-bulk"]
    # The operator filter means the task's operator: "mined" is an origin, and no task's operator.
    assert store.list_episodes(EpisodeFilter(operator="mined")) == []


def _row(task: object, episode_id: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "id": episode_id,
        "task_id": task.id,  # type: ignore[attr-defined]
        "model": "m",
        "action_format": "function_calling",
        "status": "completed",
        "exit_reason": "submitted",
        "started_at": now,
        "finished_at": now,
    }


def test_migration_0005_fills_the_copies_and_the_rollup_from_stored_episodes(db_url: str) -> None:
    rng = random.Random(5)
    with Store(db_url) as store:
        _fill(store, rng, 60)
        expected = store.stats()
    # Back to 0004 with the episodes kept (a plain engine: SQLite's foreign keys stay off, as its table
    # rebuilds need and as Store has them when it migrates).
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0004")
        columns = {column["name"] for column in sa.inspect(connection).get_columns("episodes")}
        tables = set(sa.inspect(connection).get_table_names())
    engine.dispose()
    assert "origin" not in columns and "stats_values" not in tables
    with Store(db_url, upgrade=True) as store:
        assert _schema_diff(store) == []
        refilled = store.stats()
        assert refilled.to_json() == expected.to_json() == _aggregated(store)
        with store._read() as session:
            for table in (StatsOutcome, StatsValue, StatsTask):
                assert session.scalar(sa.select(sa.func.count()).select_from(table)) > 0
        by_origin = {group.key: group.episodes for group in refilled.by_origin}
        assert sum(by_origin.values()) == 60 and set(by_origin) == {
            "swap_compare",
            "negate_condition",
            "mined",
            "imported",
        }
        # The triggers came back with the tables.
        store.save_episode(_random_episode(rng, store.list_tasks()[0].id), _steps(2))
        assert store.stats().to_json() == _aggregated(store)
        assert store.stats().total.episodes == 61


def test_a_filtered_selection_is_aggregated_from_the_episodes(store: Store) -> None:
    _fill(store, random.Random(3), 50)
    qwen = store.stats(EpisodeFilter(model="qwen"))
    everything = store.stats()
    (from_rollup,) = [group for group in everything.by_model if group.key == "qwen"]
    assert qwen.total.to_json() == {**from_rollup.to_json(), "key": "all"}
    assert isinstance(qwen, StoreStats) and qwen.filter == EpisodeFilter(model="qwen")
