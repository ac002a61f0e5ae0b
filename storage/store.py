"""``Store``: the one place in Forager that speaks SQL, over SQLite (one machine) or PostgreSQL (many).

Objects come back detached from any session, with the relationships each method names already loaded;
touching another relationship raises ``DetachedInstanceError`` rather than querying behind the caller's
back. Sessions use ``expire_on_commit=False`` so that returned objects keep their values.
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker

from storage.errors import SchemaError, StoreError
from storage.migrations import alembic_config, script_directory
from storage.models import (
    Base,
    Episode,
    EpisodeStatus,
    Image,
    ImageStatus,
    Repository,
    Step,
    Task,
    TaskKind,
    TaskStatus,
)

#: How long a SQLite writer waits for another process's write to finish before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How long to wait for a PostgreSQL server to answer, unless the URL sets ``connect_timeout``.
POSTGRES_CONNECT_TIMEOUT_S = 10

# Execution options read by the SQLite "begin" listener (see _configure_sqlite).
_BEGIN_MODE = "forager_sqlite_begin"
_FOREIGN_KEYS = "forager_sqlite_foreign_keys"

# Alembic's ``context`` and ``op`` are process-wide proxies: two migrations running at once in one process
# would share them (and each other's connection), so schema checks in a process take turns.
_SCHEMA_LOCK = threading.Lock()

# Rows per IN (...) lookup: below SQLite's and PostgreSQL's limits on bound parameters.
_LOOKUP_BATCH = 500


class Store:
    """The SQL-indexed store of repositories, images, tasks, episodes and steps.

    ``Store(url)`` opens the database and checks its schema: an empty database is created at the latest
    revision; one at an older revision raises ``SchemaError`` unless ``upgrade=True`` (``forager db
    upgrade``), because several workers may share it and migrating under them must be a decision; one at
    a revision this Forager does not know raises ``SchemaError``. Failures to open raise ``StoreError``.

    ``url`` is ``sqlite:///PATH`` (the parent directory is created) or ``postgresql://USER:PASSWORD@HOST/DB``
    (run with psycopg 3). A ``Store`` is safe to share between threads; use one per process.
    """

    def __init__(self, url: str, *, upgrade: bool = False) -> None:
        self._url = _parse_url(url)
        self._backend = self._url.get_backend_name()
        self._engine = _create_engine(self._url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        # On SQLite a writing transaction takes the write lock when it begins (BEGIN IMMEDIATE), waiting up
        # to busy_timeout for it. A deferred one that read first and then writes fails at once with
        # "database is locked" if another process committed in between, which busy_timeout cannot cure.
        self._write_sessions = sessionmaker(
            self._engine.execution_options(**{_BEGIN_MODE: "IMMEDIATE"}), expire_on_commit=False
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
        """Rows per table, in dependency order (repositories first, steps last)."""
        with self._read() as session:
            return {
                table.name: session.scalar(sa.select(sa.func.count()).select_from(table)) or 0
                for table in Base.metadata.sorted_tables
            }

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
            connection.execution_options(**{_BEGIN_MODE: "IMMEDIATE", _FOREIGN_KEYS: False})
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
        """The episode with this id, with ``task`` and ``steps`` (in order) loaded; None if there is none."""
        with self._read() as session:
            return session.scalars(
                _episodes().options(selectinload(Episode.steps)).where(Episode.id == episode_id)
            ).one_or_none()

    def list_episodes(
        self,
        task_id: int | None = None,
        model: str | None = None,
        status: EpisodeStatus | str | None = None,
        resolved: bool | None = None,
    ) -> list[Episode]:
        """Episodes in creation order, with ``task`` loaded but not ``steps`` (use ``get_episode``); filtered
        by task, model, status and resolved (``resolved=None`` does not filter)."""
        query = _episodes().order_by(Episode.created_at, Episode.id)
        if task_id is not None:
            query = query.where(Episode.task_id == task_id)
        if model is not None:
            query = query.where(Episode.model == model)
        if status is not None:
            query = query.where(Episode.status == status)
        if resolved is not None:
            query = query.where(Episode.resolved == resolved)
        with self._read() as session:
            return list(session.scalars(query))

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
            raise self._describe(exc) from exc

    def _describe(self, exc: sa_exc.DBAPIError) -> StoreError:
        message = str(exc.orig).strip()
        detail = message.splitlines()[0] if message else type(exc.orig).__name__
        if isinstance(exc, sa_exc.IntegrityError):
            return StoreError(
                f"database {self.url} rejected the change ({detail}): it conflicts with stored data or "
                "refers to a missing record"
            )
        if self._backend == "sqlite":
            path = self._url.database
            if "not a database" in detail or "malformed" in detail:
                return StoreError(
                    f"{path} is not a SQLite database or is corrupt: "
                    "move it aside or choose another with --db"
                )
            if "locked" in detail:
                return StoreError(
                    f"SQLite database {path} stayed locked by another process for "
                    f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s: retry, or use PostgreSQL for many workers"
                )
            if "unable to open" in detail:
                return StoreError(
                    f"cannot open SQLite database {path} ({detail}): check the path and its permissions, "
                    "or choose another with --db"
                )
        elif isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and _is_connection_failure(exc):
            reason = _connection_failure_reason(detail)
            if "authentication" in reason or "does not exist" in reason:
                return StoreError(
                    f"cannot connect to database {self.url}: {reason}. "
                    "Check the user, password and database name in --db / FORAGER_DB"
                )
            return StoreError(
                f"cannot reach database {self.url}: {reason}. Is the server running? Check --db / FORAGER_DB"
            )
        return StoreError(f"database {self.url} failed: {detail}")


def _images() -> sa.Select[tuple[Image]]:
    return sa.select(Image).options(joinedload(Image.repository))


def _tasks() -> sa.Select[tuple[Task]]:
    return sa.select(Task).options(joinedload(Task.image).joinedload(Image.repository))


def _episodes() -> sa.Select[tuple[Episode]]:
    return sa.select(Episode).options(joinedload(Episode.task))


def _mask_unparsed(url: str) -> str:
    """Mask the password of a URL that SQLAlchemy cannot parse (so cannot mask itself)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _parse_url(url: str) -> sa.URL:
    """Parse a database URL; a plain ``postgresql://`` (or ``postgres://``) means the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError:
        raise StoreError(
            f"invalid database URL {_mask_unparsed(url)!r}: use sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST/DB (--db / FORAGER_DB)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: Forager stores to "
            "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB (--db / FORAGER_DB)"
        )
    return parsed


def _create_engine(url: sa.URL) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        _make_parent_directory(url)
    elif "connect_timeout" not in url.query:
        # libpq waits forever by default for a host that drops packets.
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    try:
        # pre_ping: long-running workers outlive PostgreSQL restarts and idle-connection reaping.
        engine = sa.create_engine(
            url, connect_args=connect_args, pool_pre_ping=url.get_backend_name() == "postgresql"
        )
    except sa_exc.NoSuchModuleError:
        raise StoreError(
            f"unknown database driver in {url.render_as_string(hide_password=True)!r}: use sqlite:///PATH "
            "or postgresql://USER:PASSWORD@HOST/DB (--db / FORAGER_DB)"
        ) from None
    except ImportError:
        if url.get_driver_name() == "psycopg":
            raise StoreError("PostgreSQL needs the psycopg driver: pip install 'forager[postgres]'") from None
        raise StoreError(
            f"the {url.get_driver_name()} database driver is not installed: install it, or use a "
            "postgresql:// URL with psycopg (pip install 'forager[postgres]')"
        ) from None
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


def _make_parent_directory(url: sa.URL) -> None:
    database = url.database
    if not database or database == ":memory:" or url.query.get("uri"):
        return
    try:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory of SQLite database {database} ({exc.strerror}): "
            "choose another path with --db"
        ) from None


def _configure_sqlite(engine: sa.Engine) -> None:
    """Set up every SQLite connection: WAL, a busy timeout, foreign keys, and real transactions."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module, which does not BEGIN before SELECT or DDL
        # (so migrations would not be atomic and reads not repeatable); _on_begin issues BEGIN instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Wait for another process's write lock instead of failing with "database is locked" at once.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        options = connection.get_execution_options()
        # Set per transaction rather than per connection: the pragma is ignored inside a transaction, and
        # a pooled connection must not stay without foreign keys after a migration turned them off.
        foreign_keys = "ON" if options.get(_FOREIGN_KEYS, True) else "OFF"
        connection.exec_driver_sql(f"PRAGMA foreign_keys={foreign_keys}")
        connection.exec_driver_sql(f"BEGIN {options.get(_BEGIN_MODE, 'DEFERRED')}")


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode, where readers and the writer do not block each other.

    The mode is stored in the database file, so only the first connection changes it. That change needs
    the database to itself and SQLite fails it at once, without waiting out the busy timeout, when other
    processes opening a new database at the same moment hold it too; so retry until one of them wins.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                # An in-memory database answers "memory" and stays so; that is fine.
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.05))


def _is_connection_failure(exc: sa_exc.DBAPIError) -> bool:
    """Whether a PostgreSQL error means the server could not be reached or refused the connection.

    psycopg reports failures to connect without an SQLSTATE, and a connection lost later as class 08.
    """
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or sqlstate is None or sqlstate.startswith("08")


def _connection_failure_reason(detail: str) -> str:
    """The cause in libpq's message, e.g. 'connection refused' out of 'connection failed: connection to
    server at "127.0.0.1", port 1 failed: Connection refused'."""
    reason = detail.rsplit("failed: ", 1)[-1].removeprefix("FATAL:").strip()
    return reason[:1].lower() + reason[1:]
