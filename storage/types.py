"""Column types the models share: compressed text and JSON, portable JSON, timezone-aware UTC timestamps."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, LargeBinary
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

#: JSON on SQLite, JSONB on PostgreSQL (binary, indexable, compact). ``None`` is stored as SQL NULL
#: rather than the JSON literal ``null`` so that ``IS NULL`` filters mean "absent".
PortableJSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class CompressedText(TypeDecorator[str]):
    """Text stored zlib-compressed in a binary column: observations, logs, patches.

    Why compress in the application: SQLite has no transparent compression, and trajectories are highly
    repetitive text (the same files, tracebacks and test output over and over) that zlib makes 3-10x
    smaller. Why keep it in the row rather than in files beside the database: an episode and its steps
    are written in one transaction, and files outside the database could not be committed atomically
    with the rows, so a crash could leave rows pointing at missing files or files no row references.

    Any Python ``str`` round-trips, including NUL bytes (which PostgreSQL ``text`` rejects) and lone
    surrogates (tool output decoded with ``surrogateescape``, or a model's JSON cut between the two
    halves of a surrogate pair): they are encoded with ``surrogatepass``. The cost is that SQL cannot
    search inside these columns; filter on other columns and search in Python.
    """

    impl = LargeBinary
    cache_ok = True

    #: zlib's default trade-off; higher levels gain a few percent on this text for much more CPU.
    level = 6

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return zlib.compress(value.encode("utf-8", "surrogatepass"), self.level)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return zlib.decompress(value).decode("utf-8", "surrogatepass")


class CompressedJSON(TypeDecorator[Any]):
    """JSON stored zlib-compressed in a binary column: model messages, tool schemas.

    For JSON nobody filters on in SQL and that repeats a lot (the same tool schemas in every episode,
    code in every message), where ``CompressedText``'s reasons apply. Strings inside round-trip as
    ``CompressedText`` does, lone surrogates included.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return zlib.compress(text.encode("utf-8", "surrogatepass"), CompressedText.level)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(zlib.decompress(value).decode("utf-8", "surrogatepass"))


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every backend.

    SQLite stores no offset and returns naive values; PostgreSQL returns the session's time zone. Both
    come back as UTC here. Naive values are rejected on the way in because their zone is a guess
    (``datetime.now()`` is local time): pass ``datetime.now(UTC)``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} has no time zone: use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored as UTC by process_bind_param
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime (the default of every timestamp column)."""
    return datetime.now(UTC)
