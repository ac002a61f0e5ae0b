"""The statistics rollup: what ``db stats`` reports of all episodes, kept up to date by the database.

Three small tables hold, per *dimension* (``all``, ``repository``, ``origin``, ``model``) and group key:
episodes, graded and resolved per exit reason (``stats_outcomes``); a histogram of turns and one of
tokens (``stats_values``; tokens exact below 1,000 and to three significant digits above, rounded down,
as ``storage.stats`` counts them); and episodes and resolved episodes per task (``stats_tasks``, for the
distinct task counts). Triggers written by migration 0005 add every inserted episode to them and take
away every deleted one (an update does both), whoever writes: ``Store``, the work queue, a bulk insert.
On SQLite they are row triggers; on PostgreSQL statement triggers that add a whole statement's rows at
once, in key order (so concurrent writers lock rows in the same order and cannot deadlock).

Their sizes follow the groups, not the episodes: outcomes, groups times exit reasons; histograms, groups
times distinct turns and token values (at most ~900 token values per decade); tasks, three rows per task
and one per (model, task) pair attempted. ``bench/export.py``'s 100k episodes (30 repositories, 3,000
tasks, 3 models) make 210, 35,640 and 18,000 rows. Counts that fall to zero (an episode deleted) stay as
rows of zero, which reads skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.models import Base

#: The dimensions the rollup counts by, as ``storage.stats`` names its groupings; ``all`` has one group.
DIMENSIONS = ("all", "repository", "origin", "model")
#: The group key of the one ``all`` group, and of an episode whose copy of a task field is missing.
ALL_KEY = ""
UNKNOWN_KEY = "unknown"


class _Grouped:
    """The key of a rollup row begins with its group: a dimension and a key in it."""

    # A clustered key: a group's rows are together, and SQLite keeps no separate rowid b-tree.
    __table_args__: ClassVar[dict[str, object]] = {"sqlite_with_rowid": False}

    # First in the table and so in the primary key, before the subclass's own key columns.
    dimension: Mapped[str] = mapped_column(primary_key=True, sort_order=-2)
    group_key: Mapped[str] = mapped_column(primary_key=True, sort_order=-1)
    episodes: Mapped[int] = mapped_column(sa.BigInteger())


class StatsOutcome(_Grouped, Base):
    """Episodes of one group that ended with one exit reason: how many, graded, resolved."""

    __tablename__ = "stats_outcomes"

    exit_reason: Mapped[str] = mapped_column(primary_key=True)
    graded: Mapped[int] = mapped_column(sa.BigInteger())
    resolved: Mapped[int] = mapped_column(sa.BigInteger())


class StatsValue(_Grouped, Base):
    """Episodes of one group whose ``measure`` (``turns``, or ``tokens`` rounded) was ``value``."""

    __tablename__ = "stats_values"

    measure: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger(), primary_key=True)


class StatsTask(_Grouped, Base):
    """Episodes of one group on one task (``episodes``), and how many of them resolved it."""

    __tablename__ = "stats_tasks"

    task_id: Mapped[int] = mapped_column(primary_key=True)
    resolved: Mapped[int] = mapped_column(sa.BigInteger())


def episodes(session: Session) -> int:
    """How many episodes are stored."""
    t = StatsOutcome
    # PostgreSQL's sum of integers is a numeric (a Decimal here): callers count in ints.
    return int(session.scalar(sa.select(sa.func.sum(t.episodes)).where(t.dimension == "all")) or 0)


def steps(session: Session) -> int:
    """How many steps the stored episodes have (their ``n_steps`` added up)."""
    t = StatsValue
    where = (t.dimension == "all", t.measure == "turns")
    return int(session.scalar(sa.select(sa.func.sum(t.value * t.episodes)).where(*where)) or 0)


def outcomes(session: Session) -> Iterator[tuple[str, str, str, int, int, int]]:
    """(dimension, key, exit reason, episodes, graded, resolved) of every group and exit reason."""
    t = StatsOutcome
    query = sa.select(t.dimension, t.group_key, t.exit_reason, t.episodes, t.graded, t.resolved)
    yield from session.execute(query.where(t.episodes != 0))


def histograms(session: Session) -> Iterator[tuple[str, str, str, dict[int, int]]]:
    """(dimension, key, measure, {value: episodes}) of the turns and tokens histograms of every group;
    SQLite only (``group_concat``: PostgreSQL finds the ``percentiles`` itself).

    Each histogram leaves the database as one string of numbers: measured at 100k episodes (35k
    histogram rows) on SQLite, a row per bucket cost ~130 ms of Python, one string per group ~45 ms.
    """
    t = StatsValue
    pairs = sa.func.group_concat(sa.cast(t.value, sa.String) + " " + sa.cast(t.episodes, sa.String), " ")
    query = (
        sa.select(t.dimension, t.group_key, t.measure, pairs)
        .where(t.episodes != 0)
        .group_by(t.dimension, t.group_key, t.measure)
    )
    for dimension, key, measure, text in session.execute(query):
        numbers = [int(number) for number in text.split()]
        yield dimension, key, measure, dict(zip(numbers[::2], numbers[1::2], strict=True))


def percentiles(session: Session) -> Iterator[tuple[str, str, str, int, int, int]]:
    """(dimension, key, measure, episodes, p50, p90) of the turns and tokens of every group.

    Nearest-rank percentiles, found in the database by a running sum over each histogram in key order,
    so that a few rows per group leave it rather than every bucket. Measured at 100k episodes (35k
    histogram rows): on PostgreSQL this is the fast way (the client's share drops from ~70 ms to ~8 ms);
    SQLite's window functions are slower than reading the histograms into Python (~210 ms against
    ~45 ms, with ``histograms``).
    """
    t = StatsValue
    group = (t.dimension, t.group_key, t.measure)
    seen = sa.func.sum(t.episodes).over(partition_by=group, order_by=t.value, rows=(None, 0))
    total = sa.cast(sa.func.sum(t.episodes).over(partition_by=group), sa.BigInteger)
    running = (
        sa.select(*group, t.value, seen.label("seen"), total.label("total"))
        .where(t.episodes != 0)
        .subquery()
    )
    r = running.c

    def rank(numerator: int, denominator: int) -> sa.ColumnElement[int]:
        # The smallest value with ceil(p * total) episodes at or below it, in integers on every backend.
        needed = (r.total * numerator + denominator - 1) // denominator
        return sa.func.min(sa.case((r.seen >= needed, r.value)))

    query = sa.select(r.dimension, r.group_key, r.measure, r.total, rank(1, 2), rank(9, 10)).group_by(
        r.dimension, r.group_key, r.measure, r.total
    )
    yield from session.execute(query)


def tasks(session: Session) -> Iterator[tuple[str, str, int, int]]:
    """(dimension, key, tasks attempted, tasks resolved at least once) of every group."""
    t = StatsTask
    solved = sa.func.sum(sa.case((t.resolved > 0, 1), else_=0))
    query = (
        sa.select(t.dimension, t.group_key, sa.func.count(), solved)
        .where(t.episodes > 0)
        .group_by(t.dimension, t.group_key)
    )
    for dimension, key, attempted, resolved in session.execute(query):
        yield dimension, key, attempted, int(resolved or 0)
