"""Connecting to the database: URLs, engines, SQLite's per-connection setup, and readable failures."""

from __future__ import annotations

import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from storage.errors import StoreError

#: How long a SQLite writer waits for another process's write to finish before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How long to wait for a PostgreSQL server to answer, unless the URL sets ``connect_timeout``.
POSTGRES_CONNECT_TIMEOUT_S = 10

#: Execution options read by the SQLite "begin" listener (see _configure_sqlite): the BEGIN mode, and
#: whether foreign keys are enforced in the transaction.
BEGIN_MODE = "forager_sqlite_begin"
FOREIGN_KEYS = "forager_sqlite_foreign_keys"


def describe_error(url: sa.URL, exc: sa_exc.DBAPIError) -> StoreError:
    """The database failure ``exc`` as a ``StoreError`` whose message says what to do."""
    shown = url.render_as_string(hide_password=True)
    message = str(exc.orig).strip()
    detail = message.splitlines()[0] if message else type(exc.orig).__name__
    if isinstance(exc, sa_exc.IntegrityError):
        return StoreError(
            f"database {shown} rejected the change ({detail}): it conflicts with stored data or "
            "refers to a missing record"
        )
    if url.get_backend_name() == "sqlite":
        path = url.database
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
    elif isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and is_connection_failure(exc):
        reason = connection_failure_reason(detail)
        if "authentication" in reason or "does not exist" in reason:
            return StoreError(
                f"cannot connect to database {shown}: {reason}. "
                "Check the user, password and database name in --db / FORAGER_DB"
            )
        return StoreError(
            f"cannot reach database {shown}: {reason}. Is the server running? Check --db / FORAGER_DB"
        )
    return StoreError(f"database {shown} failed: {detail}")


def _mask_unparsed(url: str) -> str:
    """Mask the password of a URL that SQLAlchemy cannot parse (so cannot mask itself)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def parse_url(url: str) -> sa.URL:
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


def create_engine(url: sa.URL) -> sa.Engine:
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
        foreign_keys = "ON" if options.get(FOREIGN_KEYS, True) else "OFF"
        connection.exec_driver_sql(f"PRAGMA foreign_keys={foreign_keys}")
        connection.exec_driver_sql(f"BEGIN {options.get(BEGIN_MODE, 'DEFERRED')}")


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


def is_connection_failure(exc: sa_exc.DBAPIError) -> bool:
    """Whether a PostgreSQL error means the server could not be reached or refused the connection.

    psycopg reports failures to connect without an SQLSTATE, and a connection lost later as class 08.
    """
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return exc.connection_invalidated or sqlstate is None or sqlstate.startswith("08")


def connection_failure_reason(detail: str) -> str:
    """The cause in libpq's message, e.g. 'connection refused' out of 'connection failed: connection to
    server at "127.0.0.1", port 1 failed: Connection refused'."""
    reason = detail.rsplit("failed: ", 1)[-1].removeprefix("FATAL:").strip()
    return reason[:1].lower() + reason[1:]
