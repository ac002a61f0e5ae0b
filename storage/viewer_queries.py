"""The reads ``forager view`` needs beyond ``Store``'s own: sorted episode pages, step search, histograms,
light listings of images and tasks, and the values the filter forms offer.

Every listing is keyset-paginated (a page starts after the sort key of the last row of the previous one),
so page 1,000 costs what page 1 does. Listings leave the bulky columns (patches, logs, baselines)
unloaded: a page of 100 rows reads 100 small rows. Reads use ``Store``'s read-only transactions, which
on SQLite do not take the write lock a foraging run needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import defer, joinedload, load_only, selectinload

from storage import queries
from storage.models import Episode, Image, Repository, Step, Task
from storage.queries import EpisodeFilter
from storage.store import Store

#: The orders an episode listing offers, by name: what each sorts by (the episode id breaks ties).
EPISODE_SORTS: dict[str, sa.ColumnElement[Any]] = {
    "created": Episode.created_at,
    "turns": Episode.n_steps,
    "tokens": Episode.prompt_tokens + Episode.completion_tokens,
}


def episode_page(
    store: Store,
    selection: EpisodeFilter | None,
    *,
    sort: str = "created",
    descending: bool = True,
    after: str | None = None,
    limit: int = 100,
) -> list[Episode]:
    """Up to ``limit`` episodes ``selection`` picks, ordered by ``sort`` (a key of ``EPISODE_SORTS``), after
    the episode ``after`` (the last of the previous page). ``task``, its image and repository are loaded,
    not the steps. Raises ``KeyError`` for an unknown sort and ``LookupError`` for an unknown ``after``."""
    with store._read() as session:
        query = _sorted(session, selection, sort, descending, after).limit(limit)
        return list(session.scalars(query.options(*queries.loaded(listing=True))))


@dataclass(frozen=True)
class SearchHit:
    """An episode with a step that contains the searched text: the first such step and the text around."""

    episode: Episode
    step: int
    snippet: str


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    scanned: int
    """Episodes whose steps were read."""
    next_after: str | None
    """Where the next page starts (the last episode read); None when no episode is left to read."""


def search_page(
    store: Store,
    selection: EpisodeFilter | None,
    text: str,
    *,
    sort: str = "created",
    descending: bool = True,
    after: str | None = None,
    limit: int = 50,
    budget: int = 2000,
    batch: int = 100,
) -> SearchPage:
    """Episodes ``selection`` picks whose steps (thought, action or observation) contain ``text``, ignoring
    case, in the order of ``episode_page``.

    Observations are stored compressed, so SQL cannot look inside them: the steps of the selected episodes
    are read ``batch`` episodes at a time and searched here. A page stops at ``limit`` hits or after
    reading ``budget`` episodes, whichever comes first; ``next_after`` continues the search from there.
    """
    needle = text.casefold()
    hits: list[SearchHit] = []
    scanned = 0
    cursor = after
    while len(hits) < limit and scanned < budget:
        with store._read() as session:
            ids = list(
                session.scalars(_sorted(session, selection, sort, descending, cursor, ids=True).limit(batch))
            )
            if not ids:
                return SearchPage(hits, scanned, None)
            found: dict[str, tuple[int, str]] = {}
            rows = session.execute(
                sa.select(Step.episode_id, Step.index, Step.thought, Step.action, Step.observation)
                .where(Step.episode_id.in_(ids))
                .order_by(Step.episode_id, Step.index)
            )
            for episode_id, index, *fields in rows:
                if episode_id not in found and (snippet := _find(needle, fields)) is not None:
                    found[episode_id] = (index, snippet)
            matched = [episode_id for episode_id in ids if episode_id in found][: limit - len(hits)]
            if matched:
                loaded = session.scalars(
                    sa.select(Episode).where(Episode.id.in_(matched)).options(*queries.loaded(listing=True))
                )
                by_id = {episode.id: episode for episode in loaded}
                hits += [SearchHit(by_id[i], *found[i]) for i in matched]
        # Continue after the last episode read, or after the last hit when the page filled up mid-batch.
        cursor = matched[-1] if len(hits) >= limit else ids[-1]
        scanned += ids.index(cursor) + 1
        if len(ids) < batch and cursor == ids[-1]:
            return SearchPage(hits, scanned, None)
    return SearchPage(hits, scanned, cursor)


def _find(needle: str, fields: Iterable[Any]) -> str | None:
    """The text around the first occurrence of ``needle`` (casefolded) in ``fields``; None if absent."""
    for field in fields:
        if field is None:
            continue
        if isinstance(field, dict) and isinstance(field.get("arguments") or {}, dict):
            arguments = field.get("arguments") or {}
            haystack = "\n".join(str(value) for value in (field.get("tool"), *arguments.values()))
        else:
            haystack = field if isinstance(field, str) else json.dumps(field, ensure_ascii=False)
        at = haystack.casefold().find(needle)
        if at >= 0:
            start, end = max(0, at - 80), min(len(haystack), at + len(needle) + 80)
            return ("…" if start else "") + haystack[start:end] + ("…" if end < len(haystack) else "")
    return None


def _sorted(
    session: sa.orm.Session,
    selection: EpisodeFilter | None,
    sort: str,
    descending: bool,
    after: str | None,
    *,
    ids: bool = False,
) -> sa.Select[Any]:
    """Episodes (or their ids) of ``selection`` in ``sort`` order, after the episode ``after``."""
    key = EPISODE_SORTS[sort]
    query = sa.select(Episode.id if ids else Episode).where(*queries.conditions(selection))
    if after is not None:
        value = session.execute(sa.select(key).where(Episode.id == after)).first()
        if value is None:
            raise LookupError(f"no episode {after!r} to continue after")
        row, last = sa.tuple_(key, Episode.id), sa.tuple_(sa.literal(value[0], key.type), sa.literal(after))
        query = query.where(row < last if descending else row > last)
    order = (key.desc(), Episode.id.desc()) if descending else (key.asc(), Episode.id.asc())
    return query.order_by(*order)


@dataclass(frozen=True)
class Histogram:
    """Counts of values in equal bins: bin ``i`` holds values in [start + i*width, start + (i+1)*width)."""

    start: int
    width: int
    counts: list[int]


#: The episode columns a histogram can count, by name.
HISTOGRAM_COLUMNS: dict[str, sa.ColumnElement[int]] = {
    "turns": Episode.n_steps,
    "tokens": Episode.prompt_tokens + Episode.completion_tokens,
}


def histogram(store: Store, selection: EpisodeFilter | None, column: str, bins: int = 20) -> Histogram:
    """A histogram of ``column`` (a key of ``HISTOGRAM_COLUMNS``) over the selected episodes, counted in
    SQL; bin widths are round numbers (1, 2 or 5 times a power of ten), so there are at most ``bins``."""
    value = HISTOGRAM_COLUMNS[column]
    where = queries.conditions(selection)
    with store._read() as session:
        low, high = session.execute(sa.select(sa.func.min(value), sa.func.max(value)).where(*where)).one()
        if low is None:
            return Histogram(0, 1, [])
        width = _round_width((high - low + 1) / bins)
        start = low // width * width
        bucket = ((value - start) // width).label("bucket")
        rows = session.execute(sa.select(bucket, sa.func.count()).where(*where).group_by(bucket)).all()
    counts = [0] * ((high - start) // width + 1)
    for index, n in rows:
        counts[int(index)] += n
    return Histogram(start, width, counts)


def _round_width(raw: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 ... that is at least ``raw``."""
    if raw <= 1:
        return 1
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def image_outcomes(store: Store) -> list[tuple[str, str | None, int]]:
    """(status, failure class, number of images) for every pair stored, most images first."""
    with store._read() as session:
        n = sa.func.count()
        query = (
            sa.select(Image.status, Image.failure_class, n)
            .group_by(Image.status, Image.failure_class)
            .order_by(n.desc(), Image.status, Image.failure_class)
        )
        return [(str(status), failure, count) for status, failure, count in session.execute(query)]


def image_page(
    store: Store,
    *,
    status: str | None = None,
    repository: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[tuple[Image, int]]:
    """Images newest first, each with how many tasks use it; without baseline, flaky list and log."""
    query = (
        sa.select(Image)
        .options(
            defer(Image.baseline, raiseload=True),
            defer(Image.flaky, raiseload=True),
            defer(Image.log_tail, raiseload=True),
            defer(Image.recipe, raiseload=True),
            joinedload(Image.repository),
        )
        .order_by(Image.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(Image.status == status)
    if repository is not None:
        query = query.where(Image.repository.has(Repository.name == repository))
    if after is not None:
        query = query.where(Image.id < after)
    with store._read() as session:
        images = list(session.scalars(query))
        tasks = _counts(session, Task.image_id, [image.id for image in images])
    return [(image, tasks.get(image.id, 0)) for image in images]


@dataclass(frozen=True)
class TaskRow:
    task: Task
    episodes: int
    resolved: int


def task_page(
    store: Store,
    *,
    kind: str | None = None,
    status: str | None = None,
    repository: str | None = None,
    operator: str | None = None,
    image_id: int | None = None,
    ids: list[int] | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[TaskRow]:
    """Tasks newest first with their episode and resolved-episode counts; without patches or statement.
    ``ids`` keeps only the tasks with those ids."""
    query = (
        sa.select(Task)
        .options(
            load_only(
                Task.id,
                Task.instance_id,
                Task.kind,
                Task.status,
                Task.image_id,
                Task.operator,
                Task.fail_to_pass,
                Task.pass_to_pass,
                Task.created_at,
                raiseload=True,
            ),
            selectinload(Task.image).options(load_only(Image.id, Image.tag), joinedload(Image.repository)),
        )
        .order_by(Task.id.desc())
        .limit(limit)
    )
    for column, value in (
        (Task.kind, kind),
        (Task.status, status),
        (Task.operator, operator),
        (Task.image_id, image_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if repository is not None:
        query = query.where(Task.image.has(Image.repository.has(Repository.name == repository)))
    if ids is not None:
        query = query.where(Task.id.in_(ids))
    if after is not None:
        query = query.where(Task.id < after)
    with store._read() as session:
        tasks = list(session.scalars(query))
        ids = [task.id for task in tasks]
        episodes = _counts(session, Episode.task_id, ids)
        resolved = _counts(session, Episode.task_id, ids, Episode.resolved.is_(True))
    return [TaskRow(task, episodes.get(task.id, 0), resolved.get(task.id, 0)) for task in tasks]


def _counts(
    session: sa.orm.Session, column: sa.ColumnElement[int], keys: list[int], *where: sa.ColumnElement[bool]
) -> dict[int, int]:
    """Rows per value of ``column`` among ``keys``."""
    if not keys:
        return {}
    query = sa.select(column, sa.func.count()).where(column.in_(keys), *where).group_by(column)
    return {key: n for key, n in session.execute(query)}


@dataclass(frozen=True)
class Choices:
    """The values the filter forms offer: what is stored."""

    models: list[str]
    exit_reasons: list[str]
    repositories: list[str]
    operators: list[str]


def choices(store: Store, most: int = 500) -> Choices:
    """The distinct models, exit reasons, repository names and operators stored (up to ``most`` each).

    Each is read by skipping through the column's index, one seek per distinct value, rather than by
    scanning every row: a store of millions of episodes has a handful of models and exit reasons.
    """

    def distinct(column: sa.ColumnElement[Any]) -> list[str]:
        values: list[str] = []
        while len(values) < most:
            query = sa.select(sa.func.min(column)).where(
                column > values[-1] if values else column.is_not(None)
            )
            value = session.scalar(query)
            if value is None:
                return [value for value in values if value]
            values.append(value)
        return [value for value in values if value]

    with store._read() as session:
        return Choices(
            distinct(Episode.model),
            distinct(Episode.exit_reason),
            distinct(Repository.name),
            distinct(Task.operator),
        )
