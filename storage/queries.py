"""Which episodes a listing, an iteration or the statistics cover: ``EpisodeFilter`` and its SQL.

Episodes are read in (created_at, id) order, a page at a time: a page starts after the (created_at, id)
of the last row of the previous one (keyset pagination), so reading page 1,000 costs what page 1 does,
and rows inserted meanwhile neither shift nor repeat rows. Each filter on an episode column leads an
index that continues in that order (see ``storage.models.Episode``), those on the task (repository,
kind, operator) included: episodes carry copies of them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import defer, joinedload, load_only, selectinload
from sqlalchemy.sql.base import ExecutableOption

from storage.models import ORIGINS_WITHOUT_OPERATOR, Episode, EpisodeStatus, Image, Task, TaskKind

#: Episode columns a listing does not load: what shows one episode, not a row of many.
LISTING_DEFERRED = (
    Episode.final_patch,
    Episode.grade,
    Episode.config,
    Episode.system_prompt,
    Episode.task_prompt,
    Episode.tools,
)
#: Image columns a listing loads.
LISTING_IMAGE_COLUMNS = (Image.id, Image.repository_id, Image.tag, Image.status)
#: Task columns a listing does not load.
TASK_LISTING_DEFERRED = (
    Task.setup_patch,
    Task.gold_patch,
    Task.test_patch,
    Task.problem_statement,
    Task.fail_to_pass,
    Task.pass_to_pass,
    Task.meta,
)


@dataclass(frozen=True)
class EpisodeFilter:
    """The episodes to cover; a field left None does not filter.

    ``since`` and ``until`` bound ``Episode.created_at`` (since inclusive, until exclusive) and must be
    timezone-aware. ``repository`` is a repository name as stored (``attrs``, ``owner/name``);
    ``operator`` a mutate-fix operator (``Task.operator``).
    """

    model: str | None = None
    resolved: bool | None = None
    exit_reason: str | None = None
    repository: str | None = None
    task_kind: str | None = None
    operator: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    task_id: int | None = None
    status: str | None = None
    action_format: str | None = None

    def __post_init__(self) -> None:
        for name, enum in (("task_kind", TaskKind), ("status", EpisodeStatus)):
            value = getattr(self, name)
            if value is not None and value not in {member.value for member in enum}:
                choices = ", ".join(member.value for member in enum)
                raise ValueError(f"unknown {name} {value!r}: use one of {choices}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name}={value!r} has no time zone: use an aware datetime (UTC)")

    def to_json(self) -> dict[str, Any]:
        """The fields that filter, for reports (datetimes as ISO 8601)."""
        shown = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                shown[field.name] = value.isoformat() if isinstance(value, datetime) else value
        return shown


def conditions(selection: EpisodeFilter | None) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses over ``Episode`` that ``selection`` means."""
    if selection is None:
        return []
    where: list[sa.ColumnElement[bool]] = []
    for column, value in (
        (Episode.model, selection.model),
        (Episode.exit_reason, selection.exit_reason),
        (Episode.task_id, selection.task_id),
        (Episode.status, selection.status),
        (Episode.action_format, selection.action_format),
    ):
        if value is not None:
            where.append(column == value)
    if selection.resolved is not None:
        where.append(Episode.resolved.is_(selection.resolved))
    if selection.since is not None:
        where.append(Episode.created_at >= selection.since)
    if selection.until is not None:
        where.append(Episode.created_at < selection.until)
    # The task's repository, kind and origin are copied onto its episodes, each leading an index.
    if selection.task_kind is not None:
        where.append(Episode.task_kind == selection.task_kind)
    if selection.repository is not None:
        where.append(Episode.repository == selection.repository)
    if selection.operator in ORIGINS_WITHOUT_OPERATOR:  # an operator named so is not that origin
        where.append(Episode.task_id.in_(sa.select(Task.id).where(Task.operator == selection.operator)))
    elif selection.operator is not None:
        where.append(Episode.origin == selection.operator)
    return where


def page(
    selection: EpisodeFilter | None, after: tuple[Any, ...] | None, limit: int, *, by_task: bool = False
) -> sa.Select[tuple[Episode]]:
    """Up to ``limit`` episodes in (created_at, id) order, after the key ``after`` (exclusive); with
    ``by_task`` in (task_id, created_at, id) order, ``after`` then being such a triple."""
    query = sa.select(Episode).where(*conditions(selection))
    columns = (Episode.created_at, Episode.id)
    if by_task:
        columns = (Episode.task_id, *columns)
    if after is not None:
        query = query.where(sa.tuple_(*columns) > sa.tuple_(*after))
    return query.order_by(*columns).limit(limit)


@functools.cache
def loaded(*, with_steps: bool = False, listing: bool = False) -> tuple[ExecutableOption, ...]:
    """What a page loads besides the episodes: the task with its image and repository, and the steps.

    For a ``listing``, the task, image and repository are joined in (a lookup by primary key per row, in
    the one query), and only what a row shows is loaded: not the episode's conversation, patches, grade
    and config, nor the task's statement, patches and tests, nor the image's build details. Otherwise the
    task (with its image and repository, joined) and the steps are one more query each per page, ``IN``
    over the page's keys, so that a task shared by many episodes of the page (with its patches) is read
    once; the image's bulky columns (recipe, test baseline, flaky tests, build log) are never loaded.
    Touching what was not loaded raises rather than querying behind the caller's back. The options are
    built once: building them cost a quarter of a listing's time.
    """
    if listing:
        task = joinedload(Episode.task)
        image = task.joinedload(Task.image).options(
            load_only(*LISTING_IMAGE_COLUMNS, raiseload=True), joinedload(Image.repository)
        )
        return (
            image,
            *(defer(column, raiseload=True) for column in LISTING_DEFERRED),
            *(task.defer(column, raiseload=True) for column in TASK_LISTING_DEFERRED),
        )
    image_columns = (Image.recipe, Image.baseline, Image.flaky, Image.log_tail)
    options: tuple[ExecutableOption, ...] = (
        selectinload(Episode.task)
        .joinedload(Task.image)
        .options(*(defer(column, raiseload=True) for column in image_columns), joinedload(Image.repository)),
    )
    return (*options, selectinload(Episode.steps)) if with_steps else options
