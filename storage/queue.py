"""The work-queue half of ``Store``: enqueueing episodes, and claiming, heartbeating and completing them.

Many workers (processes, machines, pods) share one queue through the database alone. A claim takes the
oldest claimable item under a lease: on PostgreSQL with ``SELECT … FOR UPDATE SKIP LOCKED``, so claims
never wait on each other; on SQLite inside the write lock every write session takes (BEGIN IMMEDIATE),
which serializes the workers of one machine. Leases are timed by the database's clock on PostgreSQL, so
workers on machines whose clocks disagree still agree on expiry.

An item yields at most one stored episode: the episode is inserted, and the item marked done, in one
transaction that is refused when the lease is no longer the worker's (it expired and the item was queued
or claimed again), and ``episodes.work_item_id`` is unique besides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.models import Episode, Image, Step, Task, WorkItem, WorkState
from storage.types import UTCDateTime, utcnow

_ITEMS = WorkItem.__table__
#: Rows per INSERT when enqueueing: below SQLite's and PostgreSQL's limits on bound parameters.
_INSERT_BATCH = 2_000


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one work item, as ``claim`` returned it."""

    item_id: int
    task_id: int
    image_tag: str
    attempt: int
    action_format: str
    config: dict[str, Any]
    owner: str
    claim: int
    """The item's ``attempts`` after this claim: tells this lease from a later one of the same owner."""
    max_attempts: int
    expires_at: datetime

    @property
    def last_attempt(self) -> bool:
        """Whether the item fails rather than being queued again if this claim does not complete it."""
        return self.claim >= self.max_attempts


@dataclass(frozen=True)
class QueueCounts:
    """Items per state, and per lease owner the latest heartbeat of its live leases."""

    queued: int = 0
    leased: int = 0
    done: int = 0
    failed: int = 0
    heartbeats: dict[str, datetime] | None = None

    @property
    def remaining(self) -> int:
        """Items a worker may still run."""
        return self.queued + self.leased


class QueueStore:
    """Work-queue methods of ``storage.Store``."""

    if TYPE_CHECKING:
        _backend: str

        def session(self) -> AbstractContextManager[Session]: ...
        def _read(self) -> AbstractContextManager[Session]: ...

    def enqueue(
        self,
        task_ids: Iterable[int],
        *,
        action_format: str,
        config: dict[str, Any] | None = None,
        episodes_per_task: int = 1,
        max_attempts: int = 3,
    ) -> int:
        """Queue ``episodes_per_task`` episodes (attempts 0…n-1) of each task; return how many were new.

        Items already queued for the same (task, format, attempt), whatever their state, are left as they
        are, so enqueueing again is safe and adds only what is missing.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        now = utcnow()
        rows = [
            {
                "task_id": task_id, "attempt": attempt, "action_format": action_format,
                "config": config or {}, "state": WorkState.QUEUED.value, "attempts": 0,
                "max_attempts": max_attempts, "error": "", "created_at": now, "updated_at": now,
            }
            for task_id in dict.fromkeys(task_ids)
            for attempt in range(episodes_per_task)
        ]  # fmt: skip
        insert = pg_insert if self._backend == "postgresql" else sqlite_insert
        added = 0
        with self.session() as session:
            for start in range(0, len(rows), _INSERT_BATCH):
                statement = (
                    insert(WorkItem)
                    .on_conflict_do_nothing(index_elements=["task_id", "action_format", "attempt"])
                    .returning(WorkItem.id)
                )
                # RETURNING lists the rows inserted, not those skipped: the count of new items.
                batch = rows[start : start + _INSERT_BATCH]
                added += len(session.connection().execute(statement, batch).all())
        return added

    def claim(
        self, owner: str, *, lease_seconds: float, action_format: str | None = None
    ) -> Lease | None:
        """Lease the next item to ``owner`` for ``lease_seconds``; None when nothing is claimable.

        Items whose lease expired come first (their worker is presumed dead); one that used up its
        attempts is marked failed instead. Then the oldest queued item. ``action_format`` restricts the
        claim to items of that format.
        """
        same_format = [_ITEMS.c.action_format == action_format] if action_format else []
        # Core statements on the session's connection: compiled once and cached, so a claim costs little
        # Python besides its round trips (the ORM's unit of work would cost more than the SQL).
        with self.session() as session:
            connection = self._unsynchronized(session)
            expired = [
                _ITEMS.c.state == WorkState.LEASED, _ITEMS.c.lease_expires_at < self._now_sql(), *same_format
            ]  # fmt: skip
            queued = [_ITEMS.c.state == WorkState.QUEUED, *same_format]
            # The expired lease that expired first, else the oldest queued item: COALESCE evaluates its
            # second subquery only when the first finds nothing, so this is one statement either way.
            candidate = sa.func.coalesce(
                _first(expired, _ITEMS.c.lease_expires_at), _first(queued, _ITEMS.c.id)
            )
            while True:
                row = connection.execute(self._lease_one(owner, lease_seconds, candidate)).first()
                if row is None or row.attempts <= row.max_attempts:
                    break
                # Its lease expired on every attempt it had: it fails rather than runs again.
                connection.execute(
                    _ITEMS.update()
                    .where(_ITEMS.c.id == row.id)
                    .values(
                        state=WorkState.FAILED, lease_owner=None, lease_expires_at=None,
                        attempts=row.max_attempts, error="its lease expired on every attempt",
                    )
                )  # fmt: skip
            if row is None:
                return None
            tag = row.tag if "tag" in row._fields else connection.execute(_tag(row.task_id)).scalar()
            return Lease(
                row.id, row.task_id, tag or "", row.attempt, row.action_format, row.config, owner,
                row.attempts, row.max_attempts, row.lease_expires_at,
            )  # fmt: skip

    def heartbeat(self, lease: Lease, *, lease_seconds: float) -> Lease | None:
        """Extend ``lease`` by ``lease_seconds`` from now; None if it is no longer held (the item was
        queued or claimed again after it expired, or released)."""
        with self.session() as session:
            now, extended = self._now_sql(), self._now_sql(lease_seconds)
            expires = self._unsynchronized(session).execute(
                _ITEMS.update()
                .where(*_held(lease))
                .values(lease_expires_at=extended, heartbeat_at=now, updated_at=now)
                .returning(_ITEMS.c.lease_expires_at)
            ).scalar()
        if expires is None:
            return None
        return replace(lease, expires_at=expires)

    def complete(
        self, lease: Lease, episode: Episode, steps: Sequence[Step], *, failed: bool = False
    ) -> bool:
        """Store ``episode`` with its ``steps`` and mark the item done (or ``failed``), in one transaction.

        Returns False, storing nothing, when the lease is no longer held: another worker owns the item's
        outcome now.
        """
        episode.work_item_id = lease.item_id
        episode.steps = list(steps)
        episode.n_steps = len(episode.steps)
        with self.session() as session:
            state = WorkState.FAILED if failed else WorkState.DONE
            updated = session.execute(
                sa.update(WorkItem)
                .where(*_held(lease))
                .values(
                    state=state, lease_owner=None, lease_expires_at=None,
                    error=f"the episode ended in {episode.exit_reason}" if failed else "",
                    updated_at=utcnow(),
                )
            ).rowcount  # fmt: skip
            if not updated:
                return False
            # Inserted once the update holds the item's row: a stale worker's episode never lands.
            session.add(episode)
            session.flush()
            session.execute(
                sa.update(WorkItem).where(WorkItem.id == lease.item_id).values(episode_id=episode.id)
            )
        return True

    def release(self, lease: Lease, *, counted: bool = False, error: str = "") -> bool:
        """Give the item back to the queue, e.g. on shutdown; False if the lease was no longer held.

        Unless ``counted`` (the attempt failed and should count towards ``max_attempts``) the claim is
        not counted. A counted release of the last attempt fails the item with ``error``.
        """
        with self.session() as session:
            item = session.scalars(sa.select(WorkItem).where(*_held(lease)).with_for_update()).first()
            if item is None:
                return False
            if not counted:
                item.attempts -= 1
            if counted and item.attempts >= item.max_attempts:
                item.state, item.error = WorkState.FAILED, error or "no attempt succeeded"
            else:
                item.state, item.error = WorkState.QUEUED, error
            item.lease_owner, item.lease_expires_at = None, None
        return True

    def next_images(self, limit: int, *, action_format: str | None = None) -> list[str]:
        """Image tags of the next ``limit`` queued items, in claim order (what a warm pool prepares)."""
        query = (
            sa.select(Image.tag)
            .join(Task, Task.image_id == Image.id)
            .join(WorkItem, WorkItem.task_id == Task.id)
            .where(WorkItem.state == WorkState.QUEUED)
            .order_by(WorkItem.id)
            .limit(limit)
        )
        if action_format:
            query = query.where(WorkItem.action_format == action_format)
        with self._read() as session:
            return list(session.scalars(query))

    def queue_counts(self, *, action_format: str | None = None) -> QueueCounts:
        """Items per state (of one format, if given), and the latest heartbeat of each worker holding
        leases."""
        with self._read() as session:
            per_state = sa.select(WorkItem.state, sa.func.count()).group_by(WorkItem.state)
            if action_format:
                per_state = per_state.where(WorkItem.action_format == action_format)
            states = Counter(dict(session.execute(per_state).all()))
            heartbeats = dict(
                session.execute(
                    sa.select(WorkItem.lease_owner, sa.func.max(WorkItem.heartbeat_at))
                    .where(WorkItem.state == WorkState.LEASED)
                    .group_by(WorkItem.lease_owner)
                ).all()
            )
        return QueueCounts(
            queued=states[WorkState.QUEUED], leased=states[WorkState.LEASED], done=states[WorkState.DONE],
            failed=states[WorkState.FAILED], heartbeats=heartbeats,
        )  # fmt: skip

    def list_work(self, state: WorkState | str | None = None, *, limit: int = 1000) -> list[WorkItem]:
        """Work items in id order, optionally of one state."""
        query = sa.select(WorkItem).order_by(WorkItem.id).limit(limit)
        if state is not None:
            query = query.where(WorkItem.state == state)
        with self._read() as session:
            return list(session.scalars(query))

    def _lease_one(self, owner: str, lease_seconds: float, candidate: sa.ColumnElement[Any]) -> sa.Update:
        """UPDATE the item ``candidate`` names to leased by ``owner``, RETURNING what a Lease holds:
        choosing, locking and leasing it in one round trip."""
        now = self._now_sql()
        return (
            _ITEMS.update()
            .where(_ITEMS.c.id == candidate)
            .values(
                state=WorkState.LEASED, lease_owner=owner, attempts=_ITEMS.c.attempts + 1,
                lease_expires_at=self._now_sql(lease_seconds), heartbeat_at=now, updated_at=now,
            )
            .returning(
                _ITEMS.c.id, _ITEMS.c.task_id, _ITEMS.c.attempt, _ITEMS.c.action_format, _ITEMS.c.config,
                _ITEMS.c.attempts, _ITEMS.c.max_attempts, _ITEMS.c.lease_expires_at,
                # SQLite renders a subquery in RETURNING without table names: read the tag apart there.
                *([_tag(_ITEMS.c.task_id).scalar_subquery().label("tag")] if self._postgres else []),
            )
        )  # fmt: skip

    @property
    def _postgres(self) -> bool:
        return self._backend == "postgresql"

    def _unsynchronized(self, session: Session) -> sa.Connection:
        """The session's connection, its transaction committed without waiting for the disk (PostgreSQL).

        For claims and heartbeats only: one lost in a server crash loses a lease, which the rules survive
        (the item is claimed again; a completion needs its lease). Episodes are committed durably.
        """
        connection = session.connection()
        if self._backend == "postgresql":
            connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
        return connection

    def _now_sql(self, plus_seconds: float = 0.0) -> sa.ColumnElement[datetime]:
        """Now (plus some seconds), in SQL: the database's clock on PostgreSQL (shared by every machine),
        this machine's on SQLite."""
        if self._backend == "postgresql":
            now = sa.func.now()
            return now + timedelta(seconds=plus_seconds) if plus_seconds else now
        return sa.literal(utcnow() + timedelta(seconds=plus_seconds), UTCDateTime())


def _first(conditions: list[sa.ColumnElement[bool]], order: sa.ColumnElement[Any]) -> sa.ScalarSelect[int]:
    """The id of the first item ``conditions`` select in ``order``, locked.

    SKIP LOCKED: an item another worker is claiming is passed over instead of waited for. SQLite has no
    row locks (the clause is dropped); its write lock serializes claims instead.
    """
    query = sa.select(_ITEMS.c.id).where(*conditions).order_by(order).limit(1)
    return query.with_for_update(skip_locked=True).scalar_subquery()


def _tag(task_id: Any) -> sa.Select[tuple[str]]:
    """The tag of the image of the task ``task_id`` (a value or a column)."""
    return sa.select(Image.tag).join(Task, Task.image_id == Image.id).where(Task.id == task_id)


def _held(lease: Lease) -> list[sa.ColumnElement[bool]]:
    """The conditions under which ``lease`` still holds its item."""
    return [
        WorkItem.id == lease.item_id,
        WorkItem.state == WorkState.LEASED,
        WorkItem.lease_owner == lease.owner,
        WorkItem.attempts == lease.claim,
    ]
