"""The trace half of ``Store``: adding, finding, listing and streaming execution traces.

A mixin rather than more methods in ``store.py``: it needs only the store's ``session`` and ``_read``
units of work, and keeps the trace queries in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, defer, joinedload

from storage.errors import StoreError
from storage.models import Image, Repository, Trace, TraceKind, TraceStatus

#: Traces read per query when streaming: a page of recordings fits in memory, the table need not.
_PAGE = 200
#: Keys per IN (...) lookup: below SQLite's and PostgreSQL's limits on bound parameters.
_LOOKUP_BATCH = 500


@dataclass(frozen=True)
class TraceFilter:
    """Which traces a listing or an export takes; None means any."""

    image_id: int | None = None
    status: TraceStatus | str | None = TraceStatus.OK
    kind: TraceKind | str | None = None
    repository: str | None = None
    """``owner/name`` of the image's repository."""
    min_frames: int | None = None
    max_frames: int | None = None
    entry: str | None = None
    """Text the entry point's qualified name or test id contains."""
    deterministic: bool | None = None

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if self.image_id is not None:
            found.append(Trace.image_id == self.image_id)
        if self.status is not None:
            found.append(Trace.status == self.status)
        if self.kind is not None:
            found.append(Trace.kind == self.kind)
        if self.min_frames is not None:
            found.append(Trace.n_frames >= self.min_frames)
        if self.max_frames is not None:
            found.append(Trace.n_frames <= self.max_frames)
        if self.entry:
            found.append(
                sa.or_(
                    Trace.qualname.contains(self.entry, autoescape=True),
                    Trace.test.contains(self.entry, autoescape=True),
                )
            )
        if self.deterministic is not None:
            found.append(Trace.deterministic.is_(self.deterministic))
        if self.repository is not None:
            found.append(
                Trace.image_id.in_(
                    sa.select(Image.id).join(Repository).where(Repository.name == self.repository)
                )
            )
        return found


class TraceStore:
    """Trace methods of ``storage.Store``."""

    if TYPE_CHECKING:  # provided by Store

        def session(self) -> AbstractContextManager[Session]: ...
        def _read(self) -> AbstractContextManager[Session]: ...

    def add_traces(self, traces: Iterable[Trace]) -> list[Trace]:
        """Insert ``traces`` in one transaction; raises ``StoreError``, inserting none, on a stored key."""
        traces = list(traces)
        keys = [trace.key for trace in traces]
        with self.session() as session:
            clash: set[str] = set()
            for start in range(0, len(keys), _LOOKUP_BATCH):
                batch = keys[start : start + _LOOKUP_BATCH]
                clash.update(session.scalars(sa.select(Trace.key).where(Trace.key.in_(batch))))
            if clash or len(set(keys)) < len(keys):
                raise StoreError(
                    f"{len(clash) or 'some'} trace keys are already stored or repeated "
                    f"({', '.join(sorted(clash)[:3])}): skip those entry points"
                )
            session.add_all(traces)
        return traces

    def trace_keys(self, image_id: int) -> set[str]:
        """The keys of every trace of the image, kept or dropped: the entry points already tried."""
        with self._read() as session:
            return set(session.scalars(sa.select(Trace.key).where(Trace.image_id == image_id)))

    def get_trace(self, trace_id: int) -> Trace | None:
        """The trace with this id, with ``image`` and ``image.repository`` loaded."""
        with self._read() as session:
            query = sa.select(Trace).options(joinedload(Trace.image).joinedload(Image.repository))
            return session.scalars(query.where(Trace.id == trace_id)).one_or_none()

    def list_traces(self, selection: TraceFilter | None = None, limit: int | None = None) -> list[Trace]:
        """Traces in id order, without their recording (``data`` is not loaded: it is the bulk)."""
        query = sa.select(Trace).options(defer(Trace.data), defer(Trace.context))
        query = query.where(*(selection or TraceFilter()).conditions()).order_by(Trace.id).limit(limit)
        with self._read() as session:
            return list(session.scalars(query))

    def trace_page(
        self,
        selection: TraceFilter | None = None,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Trace]:
        """A page of traces, newest first, without their recording: those after the trace ``after`` (the
        last of the previous page) or, going back, the ``limit`` just before the trace ``before``."""
        query = sa.select(Trace).options(
            defer(Trace.data), defer(Trace.context), joinedload(Trace.image).joinedload(Image.repository)
        )
        query = query.where(*(selection or TraceFilter()).conditions())
        if before is not None:
            query = query.where(Trace.id > before).order_by(Trace.id).limit(limit)
        else:
            query = query.where(Trace.id < after) if after is not None else query
            query = query.order_by(Trace.id.desc()).limit(limit)
        with self._read() as session:
            page = list(session.scalars(query))
        return page[::-1] if before is not None else page

    def iter_traces(self, selection: TraceFilter | None = None) -> Iterator[Trace]:
        """Every selected trace with its recording and image, in id order, read a page at a time."""
        conditions = (selection or TraceFilter()).conditions()
        after = 0
        while True:
            query = (
                sa.select(Trace)
                .options(joinedload(Trace.image).joinedload(Image.repository))
                .where(Trace.id > after, *conditions)
                .order_by(Trace.id)
                .limit(_PAGE)
            )
            with self._read() as session:
                page = list(session.scalars(query))
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].id

    def trace_counts(self, image_id: int | None = None) -> dict[str, Any]:
        """Kept traces, and dropped ones by reason: ``{"ok": n, "dropped": {reason: n}}``."""
        query = sa.select(Trace.status, Trace.drop_reason, sa.func.count()).group_by(
            Trace.status, Trace.drop_reason
        )
        if image_id is not None:
            query = query.where(Trace.image_id == image_id)
        counts: dict[str, Any] = {"ok": 0, "dropped": {}}
        with self._read() as session:
            for status, reason, number in session.execute(query):
                if status == TraceStatus.OK:
                    counts["ok"] += number
                else:
                    counts["dropped"][reason] = number
        return counts
