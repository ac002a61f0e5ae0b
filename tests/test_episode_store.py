"""The episode store at scale, against real databases: filters, keyset pages, streaming, statistics, and
the 0002 migration of a database holding data (SQLite, and PostgreSQL under the ``postgres`` marker)."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import DetachedInstanceError

from storage import Episode, EpisodeFilter, EpisodeStatus, Image, Step, Store, StoreError, Task, TaskKind
from storage.migrations import alembic_config
from tests import test_storage
from tests.cli import forager
from tests.test_storage import _episode, _image, _schema_diff, _steps, _task

# The same databases as tests/test_storage.py: a new SQLite file, or the emptied test PostgreSQL database.
db_url = test_storage.db_url
store = test_storage.store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
#: What touching an attribute that was not loaded raises, on a detached object.
NOT_LOADED = (sa_exc.InvalidRequestError, DetachedInstanceError)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def world(store: Store) -> dict[str, object]:
    """Two repositories; mutate-fix tasks of two operators, a mined and an imported issue-fix task; and
    episodes of two models, one per minute, with steps."""
    attrs = _image(store, tag="forager/attrs:1", name="attrs")
    widgets = _image(store, tag="forager/widgets:1", name="acme/widgets")
    tasks = {
        "swap": _task(store, attrs, "attrs-swap", meta={"operator": "swap_compare", "line": 3}),
        "negate": _task(store, widgets, "widgets-negate", meta={"operator": "negate_condition"}),
        "mined": _task(store, attrs, "attrs-mined", kind=TaskKind.ISSUE_FIX, meta={"commit": "abc"}),
        "imported": _task(store, widgets, "widgets-imp", kind=TaskKind.ISSUE_FIX, meta={"repo": "acme/w"}),
    }
    plan = [  # task, model, resolved, exit reason, steps, prompt tokens
        ("swap", "qwen", True, "submitted", 3, 100),
        ("swap", "qwen", False, "max_turns", 9, 900),
        ("swap", "gpt", True, "submitted", 2, 200),
        ("negate", "qwen", False, "submitted", 4, 400),
        ("negate", "gpt", None, "infra_error", 0, 0),
        ("mined", "gpt", True, "submitted", 5, 500),
        ("imported", "qwen", False, "format_errors", 3, 300),
        ("imported", "gpt", False, "max_turns", 9, 800),
    ]
    episodes = []
    for minute, (task, model, resolved, reason, n_steps, tokens) in enumerate(plan):
        episode = _episode(
            tasks[task],
            model=model,
            resolved=resolved,
            exit_reason=reason,
            status=EpisodeStatus.FAILED if resolved is None else EpisodeStatus.COMPLETED,
            prompt_tokens=tokens,
            completion_tokens=10 * n_steps,
            action_format="cwm_text" if task == "mined" else "function_calling",
            created_at=_at(minute),
        )
        episodes.append(store.save_episode(episode, _steps(n_steps)))
    return {"tasks": tasks, "episodes": episodes}


def _ids(episodes: list[Episode]) -> list[int]:
    """Episodes as their positions in the world's plan."""
    return [int((episode.created_at - T0).total_seconds() // 60) for episode in episodes]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, [0, 1, 2, 3, 4, 5, 6, 7]),
        ({"model": "gpt"}, [2, 4, 5, 7]),
        ({"resolved": True}, [0, 2, 5]),
        ({"resolved": False}, [1, 3, 6, 7]),
        ({"model": "qwen", "resolved": False}, [1, 3, 6]),
        ({"exit_reason": "max_turns"}, [1, 7]),
        ({"repository": "acme/widgets"}, [3, 4, 6, 7]),
        ({"repository": "nobody"}, []),
        ({"task_kind": "issue_fix"}, [5, 6, 7]),
        ({"operator": "swap_compare"}, [0, 1, 2]),
        ({"operator": "swap_compare", "model": "gpt"}, [2]),
        ({"task_kind": "mutate_fix", "repository": "acme/widgets", "exit_reason": "submitted"}, [3]),
        ({"since": _at(3), "until": _at(6)}, [3, 4, 5]),
        ({"status": "failed"}, [4]),
        ({"action_format": "cwm_text"}, [5]),
    ],
)
def test_every_filter_selects_in_listings_iteration_and_counts(store: Store, world, fields, expected) -> None:
    selection = EpisodeFilter(**fields)
    assert _ids(store.list_episodes(selection)) == expected
    assert _ids(list(store.iter_episodes(selection, batch_size=2))) == expected
    assert store.count_episodes(selection) == len(expected)
    assert store.stats(selection).total.episodes == len(expected)


def test_a_task_filter_by_id(store: Store, world) -> None:
    mined = world["tasks"]["mined"]
    assert _ids(store.list_episodes(EpisodeFilter(task_id=mined.id))) == [5]


def test_pages_follow_each_other_without_gaps_or_repeats_even_on_equal_times(store: Store) -> None:
    task = _task(store, _image(store))
    # Ten episodes created in the same microsecond (a bulk import): only the id orders them.
    for _ in range(10):
        store.save_episode(_episode(task, created_at=T0), [])
    store.save_episode(_episode(task, created_at=_at(-1)), [])  # older: comes first
    everything = [episode.id for episode in store.list_episodes(limit=1000)]
    assert len(everything) == 11 and everything[1:] == sorted(everything[1:])
    pages, after = [], None
    while page := store.list_episodes(limit=3, after=after):
        pages.append([episode.id for episode in page])
        after = page[-1].id
    assert [len(page) for page in pages] == [3, 3, 3, 2]
    assert [episode_id for page in pages for episode_id in page] == everything
    # An episode stored between two pages, newer than the reader's position, shows up on a later page.
    late = store.save_episode(_episode(task, created_at=_at(5)), [])
    assert store.list_episodes(after=everything[-1])[0].id == late.id
    with pytest.raises(StoreError, match="no episode 'nope' to list after"):
        store.list_episodes(after="nope")


def test_iteration_streams_batches_with_steps_task_image_and_repository_loaded(store: Store, world) -> None:
    streamed = list(store.iter_episodes(batch_size=3))
    assert _ids(streamed) == list(range(8))
    for episode in streamed:  # detached, yet all of it is there
        assert [step.index for step in episode.steps] == list(range(episode.n_steps))
        assert episode.task.image.repository.name in ("attrs", "acme/widgets")
        assert episode.task.problem_statement == "Fix it."
        assert episode.final_patch is None and episode.config == {}
        with pytest.raises(NOT_LOADED):  # the bulky baseline is never loaded
            _ = episode.task.image.baseline
    without = list(store.iter_episodes(EpisodeFilter(model="gpt"), with_steps=False))
    assert _ids(without) == [2, 4, 5, 7]
    with pytest.raises(NOT_LOADED):
        _ = without[0].steps
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        next(store.iter_episodes(batch_size=0))


def test_iteration_by_task_gives_each_tasks_episodes_together_across_batches(store: Store, world) -> None:
    by_time = list(store.iter_episodes(with_steps=False))
    by_task = list(store.iter_episodes(with_steps=False, by_task=True, batch_size=2))
    assert sorted(_ids(by_task)) == sorted(_ids(by_time))
    assert [e.task_id for e in by_task] == sorted(e.task_id for e in by_time)
    assert len({e.task_id for e in by_task}) > 1
    for task_id in {e.task_id for e in by_task}:  # within a task, still oldest first
        times = [e.created_at for e in by_task if e.task_id == task_id]
        assert times == sorted(times)


def test_a_listing_loads_what_a_row_shows_and_raises_on_the_rest(store: Store, world) -> None:
    (episode,) = store.list_episodes(EpisodeFilter(operator="negate_condition", model="qwen"))
    assert (episode.model, episode.exit_reason, episode.n_steps, episode.resolved) == (
        "qwen",
        "submitted",
        4,
        False,
    )
    assert (episode.task.instance_id, episode.task.operator) == ("widgets-negate", "negate_condition")
    assert episode.task.image.repository.name == "acme/widgets"
    for bulky in ("final_patch", "config", "system_prompt", "tools", "steps"):
        with pytest.raises(NOT_LOADED):
            getattr(episode, bulky)
    with pytest.raises(NOT_LOADED):
        _ = episode.task.gold_patch
    full = store.get_episode(episode.id)
    assert full is not None and full.config == {} and len(full.steps) == 4


def test_filters_refuse_what_cannot_match() -> None:
    with pytest.raises(ValueError, match="unknown task_kind 'bugfix': use one of mutate_fix, issue_fix"):
        EpisodeFilter(task_kind="bugfix")
    with pytest.raises(ValueError, match=r"since=.* has no time zone"):
        EpisodeFilter(since=datetime(2026, 1, 1))
    assert EpisodeFilter(model="m", since=T0).to_json() == {"model": "m", "since": T0.isoformat()}


def test_stats_per_repository_origin_and_model(store: Store, world) -> None:
    stats = store.stats()
    total = stats.total
    assert (total.key, total.episodes, total.tasks, total.tasks_resolved) == ("all", 8, 4, 2)
    assert (total.graded, total.resolved, total.resolve_rate) == (7, 3, 3 / 7)
    # Turns 0 2 3 3 4 5 9 9: nearest rank p50 = 4th = 3, p90 = 8th = 9.
    assert (total.turns_p50, total.turns_p90) == (3, 9)
    # Tokens (prompt + 10 per step): 0 220 130 330 440 550 990 890 -> sorted 0 130 220 330 440 550 890 990.
    assert (total.tokens_p50, total.tokens_p90) == (330, 990)
    assert total.exit_reasons == {"submitted": 4, "max_turns": 2, "format_errors": 1, "infra_error": 1}
    assert list(total.exit_reasons) == ["submitted", "max_turns", "format_errors", "infra_error"]

    by_repository = {group.key: group for group in stats.by_repository}
    assert {key: (g.episodes, g.tasks, g.resolved, g.graded) for key, g in by_repository.items()} == {
        "attrs": (4, 2, 3, 4),
        "acme/widgets": (4, 2, 0, 3),
    }
    by_origin = {group.key: (group.episodes, group.resolved) for group in stats.by_origin}
    assert by_origin == {
        "swap_compare": (3, 2),
        "negate_condition": (2, 0),
        "mined": (1, 1),
        "imported": (2, 0),
    }
    by_model = {group.key: group for group in stats.by_model}
    assert (by_model["gpt"].episodes, by_model["gpt"].turns_p50, by_model["gpt"].turns_p90) == (4, 2, 9)
    assert by_model["qwen"].exit_reasons == {"format_errors": 1, "max_turns": 1, "submitted": 2}
    assert [group.key for group in stats.by_model] == ["gpt", "qwen"]  # most episodes, then by name

    report = stats.to_json()
    assert report["total"]["resolve_rate"] == 3 / 7 and report["filter"] == {}
    assert {group["key"] for group in report["by_origin"]} == set(by_origin)

    only = store.stats(EpisodeFilter(model="qwen", repository="attrs"))
    assert (only.total.episodes, only.total.turns_p50, only.by_origin[0].key) == (2, 3, "swap_compare")
    empty = store.stats(EpisodeFilter(model="nobody"))
    assert (empty.total.episodes, empty.total.resolve_rate, empty.total.turns_p50) == (0, None, None)
    assert empty.by_repository == empty.by_origin == empty.by_model == []


def test_the_operator_column_follows_the_task_meta(store: Store) -> None:
    task = Task(
        instance_id="t", kind=TaskKind.MUTATE_FIX, problem_statement="p", meta={"operator": "off_by_one"}
    )
    assert task.operator == "off_by_one"
    task.meta = {**task.meta, "verification": "ok"}
    assert task.operator == "off_by_one"
    task.meta = {"operator": 3}  # not a name: nothing to filter by
    assert task.operator is None
    stored = _task(store, _image(store), meta={"operator": "swap_args"})
    assert store.get_task(stored.id).operator == "swap_args"


def test_counts_sum_steps_from_episodes(store: Store, world) -> None:
    counts = store.counts()
    assert (counts["episodes"], counts["steps"]) == (8, 35)
    with store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Step)) == 35


# ---- the 0002 migration ------------------------------------------------------------------------------


def test_upgrading_a_0001_database_keeps_its_data_and_moves_the_prompts(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        Path(sa.make_url(db_url).database).parent.mkdir(parents=True)
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        tables = sa.MetaData()
        tables.reflect(connection)
        t = tables.tables
        connection.execute(
            sa.insert(t["repositories"]), {"id": 1, "source": "pypi:a", "name": "a", "created_at": T0}
        )
        connection.execute(
            sa.insert(t["images"]),
            {
                "id": 1,
                "repository_id": 1,
                "tag": "forager/a:1",
                "status": "ready",
                "base_image": "b",
                "recipe": {},
                "recipe_hash": "h",
                "baseline": {},
                "flaky": [],
                "tests_passed": 0,
                "tests_total": 0,
                "created_at": T0,
                "updated_at": T0,
            },
        )
        blank = zlib.compress(b"")
        for task_id, meta in ((1, {"operator": "swap_compare", "file": "m.py"}), (2, {"commit": "abc"})):
            connection.execute(
                sa.insert(t["tasks"]),
                {
                    "id": task_id,
                    "instance_id": f"a-{task_id}",
                    "kind": "mutate_fix",
                    "image_id": 1,
                    "status": "verified",
                    "setup_patch": blank,
                    "gold_patch": blank,
                    "test_patch": blank,
                    "problem_statement": "p",
                    "fail_to_pass": [],
                    "pass_to_pass": [],
                    "meta": meta,
                    "created_at": T0,
                },
            )
        config = {
            "max_turns": 5,
            "system_prompt": "You are … ünïcödé",
            "task_prompt": "Fix a-1.",
            "error": None,
        }
        for n, episode_config in enumerate([config, {"max_turns": 5}]):
            connection.execute(
                sa.insert(t["episodes"]),
                {
                    "id": f"e{n}",
                    "task_id": 1,
                    "model": "m",
                    "action_format": "function_calling",
                    "status": "completed",
                    "exit_reason": "submitted",
                    "resolved": True,
                    "prompt_tokens": 1,
                    "completion_tokens": 1,
                    "n_steps": 1,
                    "config": episode_config,
                    "started_at": T0,
                    "finished_at": T0,
                    "created_at": _at(n),
                },
            )
            connection.execute(
                sa.insert(t["steps"]),
                {
                    "episode_id": f"e{n}",
                    "index": 0,
                    "action": {"tool": "submit", "arguments": {}},
                    "observation": zlib.compress(b"done"),
                    "model_seconds": 0,
                    "tool_seconds": 0,
                    "created_at": T0,
                },
            )
    engine.dispose()

    with pytest.raises(StoreError, match="run `forager db upgrade`"):
        Store(db_url)
    with Store(db_url, upgrade=True) as store:
        assert _schema_diff(store) == []
        moved = store.get_episode("e0")
        assert moved is not None
        assert (moved.system_prompt, moved.task_prompt) == ("You are … ünïcödé", "Fix a-1.")
        assert moved.config == {"max_turns": 5, "error": None}
        assert moved.tools is None and moved.steps[0].message is None and moved.steps[0].observation == "done"
        untouched = store.get_episode("e1")
        assert (
            untouched is not None and untouched.system_prompt is None and untouched.config == {"max_turns": 5}
        )
        assert [task.operator for task in store.list_tasks()] == ["swap_compare", None]
        assert _ids(store.list_episodes(EpisodeFilter(operator="swap_compare"))) == [0, 1]

    # And back: the prompts return to the config. (A plain engine: SQLite's foreign keys stay off, as its
    # table rebuilds need and as Store has them when it migrates.)
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0001")
        configs = dict(connection.execute(sa.text("SELECT id, config FROM episodes ORDER BY id")).all())
    engine.dispose()
    if isinstance(configs["e0"], str):  # SQLite returns the JSON text
        configs = {key: json.loads(value) for key, value in configs.items()}
    assert configs == {"e0": config, "e1": {"max_turns": 5}}


def test_image_relationship_of_listed_episodes_is_shared_per_page(store: Store, world) -> None:
    page = store.list_episodes()
    images = {id(episode.task.image) for episode in page}
    assert len(images) == 2 and all(isinstance(episode.task.image, Image) for episode in page)


# ---- the command line --------------------------------------------------------------------------------


def test_episode_list_pages_and_filters_from_the_command_line(db_url: str, world, tmp_path: Path) -> None:
    first = forager(
        "--db", db_url, "episode", "list", "--model", "qwen", "--limit", "2", "--json", home=tmp_path
    )
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert [row["created_at"] for row in page["episodes"]] == [_at(0).isoformat(), _at(1).isoformat()]
    assert page["episodes"][0]["repository"] == "attrs" and page["episodes"][0]["operator"] == "swap_compare"
    rest = forager(
        "--db",
        db_url,
        "episode",
        "list",
        "--model",
        "qwen",
        "--after",
        page["next_after"],
        "--json",
        home=tmp_path,
    )
    assert [row["created_at"] for row in json.loads(rest.stdout)["episodes"]] == [
        _at(3).isoformat(),
        _at(6).isoformat(),
    ]
    assert json.loads(rest.stdout)["next_after"] is None

    # A time without a zone is UTC; the kind and the resolved flag filter too.
    window = forager(
        "--db", db_url, "episode", "list", "--since", "2026-11-01T12:03:00", "--until", "2026-11-01 12:06:00",
        "--kind", "mutate_fix", "--unresolved", home=tmp_path,
    )  # fmt: skip
    assert window.returncode == 0, window.stderr
    assert "widgets-negate" in window.stdout and "attrs-mined" not in window.stdout
    assert "next page" not in window.stdout

    missing = forager("--db", db_url, "episode", "list", "--after", "nope", home=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: no episode 'nope' to list after")
    bad_kind = forager("--db", db_url, "episode", "list", "--kind", "bugfix", home=tmp_path)
    assert bad_kind.returncode == 2 and "bugfix" in bad_kind.stderr


def test_db_stats_from_the_command_line(db_url: str, world, tmp_path: Path) -> None:
    as_json = forager("--db", db_url, "db", "stats", "--json", home=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert (report["total"]["episodes"], report["total"]["tasks"]) == (8, 4)
    assert {group["key"] for group in report["by_model"]} == {"gpt", "qwen"}
    text = forager("--db", db_url, "db", "stats", "--repository", "acme/widgets", home=tmp_path)
    assert text.returncode == 0, text.stderr
    for expected in ("per repository", "acme/widgets", "negate_condition", "imported", "per model"):
        assert expected in text.stdout
    assert "attrs" not in text.stdout.replace("acme/widgets", "")
    nothing = forager("--db", db_url, "db", "stats", "--model", "nobody", home=tmp_path)
    assert nothing.stdout.strip() == "no episode matches"
