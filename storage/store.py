"""``Store``: the one place in Forager that speaks SQL, over SQLite (one machine) or PostgreSQL (many).

Objects come back detached from any session, with the relationships each method names already loaded;
touching another relationship raises ``DetachedInstanceError`` rather than querying behind the caller's
back. Sessions use ``expire_on_commit=False`` so that returned objects keep their values.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, joinedload, sessionmaker

from storage import queries, rollup, stats
from storage.engine import (
    BEGIN_MODE,
    FOREIGN_KEYS,
    SQLITE_BUSY_TIMEOUT_MS,
    create_engine,
    describe_error,
    parse_url,
)
from storage.errors import SchemaError, StoreError
from storage.migrations import alembic_config, script_directory
from storage.models import (
    Base,
    Episode,
    Image,
    ImageStatus,
    Repository,
    Step,
    Task,
    TaskKind,
    TaskStatus,
)
from storage.queries import EpisodeFilter
from storage.queue import QueueStore
from storage.stats import StoreStats
from storage.traces import TraceStore

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "Store"]

# Alembic's ``context`` and ``op`` are process-wide proxies: two migrations running at once in one process
# would share them (and each other's connection), so schema checks in a process take turns.
_SCHEMA_LOCK = threading.Lock()

# Rows per IN (...) lookup: below SQLite's and PostgreSQL's limits on bound parameters.
_LOOKUP_BATCH = 500


class Store(TraceStore, QueueStore):
    """The SQL-indexed store of repositories, images, tasks, episodes and steps.

    ``Store(url)`` opens the database and checks its schema: an empty database is created at the latest
    revision; one at an older revision raises ``SchemaError`` unless ``upgrade=True`` (``forager db
    upgrade``), because several workers may share it and migrating under them must be a decision; one at
    a revision this Forager does not know raises ``SchemaError``. Failures to open raise ``StoreError``.

    ``url`` is ``sqlite:///PATH`` (the parent directory is created) or ``postgresql://USER:PASSWORD@HOST/DB``
    (run with psycopg 3). A ``Store`` is safe to share between threads; use one per process.
    """

    def __init__(self, url: str, *, upgrade: bool = False) -> None:
        self._url = parse_url(url)
        self._backend = self._url.get_backend_name()
        self._engine = create_engine(self._url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        # On SQLite a writing transaction takes the write lock when it begins (BEGIN IMMEDIATE), waiting up
        # to busy_timeout for it. A deferred one that read first and then writes fails at once with
        # "database is locked" if another process committed in between, which busy_timeout cannot cure.
        self._write_sessions = sessionmaker(
            self._engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"}), expire_on_commit=False
        )
        self._scripts = script_directory()
        try:
            self._check_schema(upgrade=upgrade)
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def url(self) -> str:
        """The database URL, with the password masked, for display."""
        return self._url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection. The store can still be used; it reconnects on demand."""
        self._engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed if the block completes, rolled back if it raises.

        Database failures inside it are raised as ``StoreError``. Objects loaded in it stay usable after it
        ends (their loaded attributes; not unloaded relationships). On SQLite it holds the database's write
        lock from start to end, so keep it short.
        """
        with self._errors(), self._write_sessions() as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """Like ``session`` but without taking SQLite's write lock; for methods that only read."""
        with self._errors(), self._sessions() as session, session.begin():
            yield session

    # ---- schema -------------------------------------------------------------------------------------

    def head_revision(self) -> str:
        """The latest schema revision this Forager knows."""
        head = self._scripts.get_current_head()
        assert head is not None, "storage/migrations/versions has no revision"
        return head

    def schema_revision(self) -> str | None:
        """The database's schema revision; None if it has none (no Forager schema yet)."""
        with self._read() as session:
            return MigrationContext.configure(session.connection()).get_current_revision()

    def upgrade(self) -> None:
        """Migrate the database to the latest revision (nothing to do if it is there already).

        Raises ``SchemaError`` if the database is at a revision newer than this Forager knows.
        """
        self._check_schema(upgrade=True)

    def counts(self) -> dict[str, int]:
        """Rows per table, in dependency order (repositories first, steps last).

        Episodes and steps, by far the largest tables, are not counted but read off the statistics
        rollup (``storage.rollup``; steps are the episodes' ``n_steps``, which ``save_episode`` sets).
        """
        with self._read() as session:
            counts = {
                table.name: rollup.episodes(session)
                if table.name == Episode.__tablename__
                else session.scalar(sa.select(sa.func.count()).select_from(table)) or 0
                for table in Base.metadata.sorted_tables
                if table.name != Step.__tablename__
            }
            counts[Step.__tablename__] = rollup.steps(session)
            return counts

    def _check_schema(self, *, upgrade: bool) -> None:
        """Bring an empty database to head, accept one at head, and refuse anything else unless upgrading.

        All of it happens in one transaction under a lock, so that workers opening a new database at the
        same moment create the schema once, and a failed migration leaves the previous schema intact.
        """
        head = self.head_revision()
        if self.schema_revision() == head:  # the usual case: no need to queue for the lock
            return
        known = {script.revision for script in self._scripts.walk_revisions()}
        with _SCHEMA_LOCK, self._errors(), self._engine.connect() as connection:
            # SQLite: take the write lock up front (serializing concurrent openers), and turn foreign keys
            # off, as SQLite's migration guide requires: batch migrations rebuild a table by dropping it,
            # and with foreign keys on, that drop would first delete (ON DELETE CASCADE) its children.
            connection.execution_options(**{BEGIN_MODE: "IMMEDIATE", FOREIGN_KEYS: False})
            with connection.begin():
                self._lock(connection, "schema")
                current = MigrationContext.configure(connection).get_current_revision()
                if current == head:
                    return
                tables = set(sa.inspect(connection).get_table_names())
                if current is None and tables - {"alembic_version"}:
                    # Another application's tables, or Forager's with the revision stamp removed: migrating
                    # from nothing would collide with them either way.
                    raise SchemaError(
                        f"database {self.url} holds tables but no Forager schema revision: "
                        "choose an empty database with --db / FORAGER_DB"
                    )
                if current is not None and current not in known:
                    raise SchemaError(
                        f"database {self.url} is at schema revision {current}, which is newer than this "
                        f"Forager knows (latest: {head}): upgrade Forager or use another database"
                    )
                if tables and not upgrade:
                    raise SchemaError(
                        f"database {self.url} is at schema revision {current or 'base'} but this Forager "
                        f"needs {head}: run `forager db upgrade` (back the database up first)"
                    )
                command.upgrade(alembic_config(connection), "head")
                if (
                    self._backend == "sqlite"
                    and connection.exec_driver_sql("PRAGMA foreign_key_check").first()
                ):
                    raise SchemaError(
                        f"migrating {self.url} to {head} would break foreign keys, so it was rolled back: "
                        "report this as a Forager bug"
                    )

    # ---- repositories and images --------------------------------------------------------------------

    def get_or_create_repository(self, source: str, name: str, commit: str | None = None) -> Repository:
        """The repository stored for (``source``, ``commit``), created with ``name`` if there is none.

        A None commit matches a stored None commit. An existing repository keeps its stored name.
        """
        with self.session() as session:
            # Serialized because NULL commits escape the unique constraint: two workers creating the same
            # pypi: source at once would otherwise both insert it.
            self._lock(session, f"repository\0{source}")
            found = session.scalars(
                sa.select(Repository)
                .where(Repository.source == source, Repository.commit.is_not_distinct_from(commit))
                .order_by(Repository.id)
            ).first()
            if found is not None:
                return found
            repository = Repository(source=source, name=name, commit=commit)
            session.add(repository)
        return repository

    def save_image(self, image: Image) -> Image:
        """Insert ``image``, or update the stored image that has the same tag.

        On update, the attributes set on ``image`` overwrite the stored values and the attributes never set
        keep theirs; ``image.id`` is set to the stored image's id. Set ``repository_id`` (or
        ``repository``) on a new image. Returns the image as now stored, with ``repository`` loaded.
        """
        with self.session() as session:
            self._lock(session, f"image\0{image.tag}")
            stored_id = session.scalar(sa.select(Image.id).where(Image.tag == image.tag))
            if stored_id is None:
                session.add(image)
            else:
                image.id = stored_id
                session.merge(image)
            session.flush()
            return session.scalars(
                _images().where(Image.id == image.id).execution_options(populate_existing=True)
            ).one()

    def get_image(self, ref: int | str) -> Image | None:
        """The image with id ``ref`` (an int) or tag ``ref`` (a str), with ``repository`` loaded; None if
        there is none."""
        column = Image.id if isinstance(ref, int) else Image.tag
        with self._read() as session:
            return session.scalars(_images().where(column == ref)).one_or_none()

    def registry_reference(self, tag: str) -> str | None:
        """Where ``forager images push`` put the image tagged ``tag``; None if it was never pushed."""
        with self._read() as session:
            return session.scalar(sa.select(Image.registry_ref).where(Image.tag == tag))

    def list_images(self, status: ImageStatus | str | None = None, name: str | None = None) -> list[Image]:
        """Images in creation order, with ``repository`` loaded; filtered by status and repository name."""
        query = _images().order_by(Image.id)
        if status is not None:
            query = query.where(Image.status == status)
        if name is not None:
            query = query.where(Image.repository.has(Repository.name == name))
        with self._read() as session:
            return list(session.scalars(query))

    def delete_image(self, ref: int | str) -> bool:
        """Delete the image record with id or tag ``ref``; False if there is none.

        The Docker image itself is the caller's to remove. Raises ``StoreError`` if tasks use the image.
        """
        column = Image.id if isinstance(ref, int) else Image.tag
        with self.session() as session:
            image = session.scalars(sa.select(Image).where(column == ref)).one_or_none()
            if image is None:
                return False
            n_tasks = session.scalar(
                sa.select(sa.func.count()).select_from(Task).where(Task.image_id == image.id)
            )
            if n_tasks:
                raise StoreError(
                    f"image {image.tag} cannot be deleted: {n_tasks} tasks use it, and their episodes must "
                    "stay reproducible"
                )
            session.delete(image)
        return True

    # ---- tasks --------------------------------------------------------------------------------------

    def add_tasks(self, tasks: Iterable[Task]) -> list[Task]:
        """Insert ``tasks`` in one transaction and return them, with their ids set.

        Raises ``StoreError``, inserting none, if an ``instance_id`` is already stored or repeated.
        """
        tasks = list(tasks)
        instance_ids = [task.instance_id for task in tasks]
        conflicts = {instance_id for instance_id, n in Counter(instance_ids).items() if n > 1}
        with self.session() as session:
            for start in range(0, len(instance_ids), _LOOKUP_BATCH):
                batch = instance_ids[start : start + _LOOKUP_BATCH]
                conflicts.update(
                    session.scalars(sa.select(Task.instance_id).where(Task.instance_id.in_(batch)))
                )
            if conflicts:
                shown = ", ".join(sorted(conflicts)[:5]) + (" ..." if len(conflicts) > 5 else "")
                raise StoreError(
                    f"{len(conflicts)} task instance ids are already stored or repeated ({shown}): "
                    "skip those tasks or give them new instance ids"
                )
            session.add_all(tasks)
        return tasks

    def get_task(self, ref: int | str) -> Task | None:
        """The task with id ``ref`` (an int) or ``instance_id`` ``ref`` (a str), with ``image`` and
        ``image.repository`` loaded; None if there is none."""
        column = Task.id if isinstance(ref, int) else Task.instance_id
        with self._read() as session:
            return session.scalars(_tasks().where(column == ref)).one_or_none()

    def list_tasks(
        self,
        kind: TaskKind | str | None = None,
        image_id: int | None = None,
        status: TaskStatus | str | None = None,
    ) -> list[Task]:
        """Tasks in creation order, with ``image`` and ``image.repository`` loaded; filtered by kind, image
        and status."""
        query = _tasks().order_by(Task.id)
        if kind is not None:
            query = query.where(Task.kind == kind)
        if image_id is not None:
            query = query.where(Task.image_id == image_id)
        if status is not None:
            query = query.where(Task.status == status)
        with self._read() as session:
            return list(session.scalars(query))

    # ---- episodes -----------------------------------------------------------------------------------

    def save_episode(self, episode: Episode, steps: Sequence[Step]) -> Episode:
        """Store a finished ``episode`` and its ``steps`` in one transaction: all of it, or nothing.

        Sets ``episode.steps`` to ``steps`` (each with its ``index``) and ``episode.n_steps`` to their
        number. Raises ``StoreError``, storing nothing, if the episode id is already stored or a step is
        rejected (for instance two steps with the same index). Returns ``episode``.
        """
        episode.steps = list(steps)
        episode.n_steps = len(episode.steps)
        with self.session() as session:
            if session.get(Episode, episode.id) is not None:
                raise StoreError(
                    f"episode {episode.id} is already stored: episodes are written once, so store another "
                    "attempt under a new id"
                )
            session.add(episode)
        return episode

    def get_episode(self, episode_id: str) -> Episode | None:
        """The episode with this id, with ``steps`` (in order), ``task``, ``task.image`` and
        ``task.image.repository`` loaded as ``iter_episodes`` loads them; None if there is none."""
        with self._read() as session:
            query = sa.select(Episode).where(Episode.id == episode_id)
            return session.scalars(query.options(*queries.loaded(with_steps=True))).one_or_none()

    def list_episodes(
        self, filter: EpisodeFilter | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[Episode]:
        """One page of episodes in (created_at, id) order: up to ``limit`` of those ``filter`` selects.

        ``after`` is the id of the last episode of the previous page (keyset pagination: every page costs
        the same, and episodes stored meanwhile do not shift the pages). ``task``, ``task.image`` and
        ``task.image.repository`` are loaded, but what shows one episode is not (steps, conversation,
        patches, grade, config; the task's statement, patches, tests and meta): ``get_episode`` or
        ``iter_episodes`` read those. Raises ``StoreError`` if there is no episode ``after``.
        """
        with self._read() as session:
            key = self._key(session, after) if after is not None else None
            query = queries.page(filter, key, limit).options(*queries.loaded(listing=True))
            return list(session.scalars(query))

    def iter_episodes(
        self,
        filter: EpisodeFilter | None = None,
        *,
        batch_size: int = 200,
        with_steps: bool = True,
        by_task: bool = False,
    ) -> Iterator[Episode]:
        """Every episode ``filter`` selects, in (created_at, id) order, read ``batch_size`` at a time;
        with ``by_task``, in (task, created_at, id) order: each task's episodes together, so a reader
        that works per task (near-duplicate filtering) can forget a task once it has passed.

        Memory stays that of one batch whatever the store's size: each batch is read in its own short
        transaction and the store keeps no reference to what it yielded. Each episode comes with
        ``task``, ``task.image`` and ``task.image.repository`` loaded, and its ``steps`` in order when
        ``with_steps``. Episodes stored while iterating are yielded if they sort after the current batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        key: tuple[Any, ...] | None = None
        options = queries.loaded(with_steps=with_steps)
        while True:
            with self._read() as session:
                query = queries.page(filter, key, batch_size, by_task=by_task).options(*options)
                batch = list(session.scalars(query))
            yield from batch
            if len(batch) < batch_size:
                return
            last = batch[-1]
            key = (last.task_id, last.created_at, last.id) if by_task else (last.created_at, last.id)
            del batch

    def count_episodes(self, filter: EpisodeFilter | None = None) -> int:
        """How many episodes ``filter`` selects (an index scan of them, not a read; all of them: the
        statistics rollup's count)."""
        with self._read() as session:
            where = queries.conditions(filter)
            if not where:
                return rollup.episodes(session)
            return session.scalar(sa.select(sa.func.count()).select_from(Episode).where(*where)) or 0

    def stats(self, filter: EpisodeFilter | None = None) -> StoreStats:
        """Counts, resolve rates, turns and tokens (p50, p90) and exit reasons of the episodes ``filter``
        selects: in total, and per repository, task origin (mutate-fix operator, or issue-fix source) and
        model. Computed in the database."""
        with self._read() as session:
            return stats.compute(session, filter)

    def _key(self, session: Session, episode_id: str) -> tuple[datetime, str]:
        """The (created_at, id) paging key of a stored episode."""
        created_at = session.scalar(sa.select(Episode.created_at).where(Episode.id == episode_id))
        if created_at is None:
            raise StoreError(
                f"no episode {episode_id!r} to list after in {self.url}: pass the id of the last episode of "
                "the previous page"
            )
        return created_at, episode_id

    # ---- internals ----------------------------------------------------------------------------------

    def _lock(self, executor: Session | sa.Connection, key: str) -> None:
        """Serialize transactions that use the same ``key`` until they end.

        PostgreSQL takes a transaction-scoped advisory lock; SQLite writers are serialized already, by
        BEGIN IMMEDIATE.
        """
        if self._backend == "postgresql":
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            executor.execute(sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest, signed=True))))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Raise the database's failures as ``StoreError`` with a message that says what to do.

        ``ProgrammingError`` (malformed SQL) is a Forager bug and passes through with its traceback.
        """
        try:
            yield
        except sa_exc.DBAPIError as exc:
            if isinstance(exc, sa_exc.ProgrammingError):
                raise
            raise describe_error(self._url, exc) from exc


def _images() -> sa.Select[tuple[Image]]:
    return sa.select(Image).options(joinedload(Image.repository))


def _tasks() -> sa.Select[tuple[Task]]:
    return sa.select(Task).options(joinedload(Task.image).joinedload(Image.repository))

