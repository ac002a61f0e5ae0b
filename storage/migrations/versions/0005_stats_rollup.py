"""Statistics in constant time and listings by task fields without joins.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

- Episodes get copies of their task's repository name, kind and origin (operator, ``mined`` or
  ``imported``), each leading an index in listing order, and the statistics' covering index gains them;
  an index on (n_steps, id) serves the viewer's sort by turns. Existing episodes are filled in.
- ``stats_outcomes``, ``stats_values`` and ``stats_tasks``: the rollup of ``storage.rollup``, filled from
  the existing episodes, and triggers that keep it up to date on every insert, update and delete of an
  episode (row triggers on SQLite; statement triggers over transition tables on PostgreSQL).

The SQL is spelled out here rather than imported, so that this script never changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COPIES = (("repository", sa.String()), ("task_kind", sa.String(length=16)), ("origin", sa.String()))
NEW_INDEXES = [
    ("ix_episodes_repository_created_at", ["repository", "created_at", "id"]),
    ("ix_episodes_task_kind_created_at", ["task_kind", "created_at", "id"]),
    ("ix_episodes_origin_created_at", ["origin", "created_at", "id"]),
    ("ix_episodes_n_steps_id", ["n_steps", "id"]),
]
OLD_SUMMARY = [
    "model", "exit_reason", "resolved", "n_steps", "prompt_tokens", "completion_tokens", "task_id",
    "created_at", "status", "action_format",
]  # fmt: skip
SUMMARY = [*OLD_SUMMARY, "repository", "task_kind", "origin"]
#: The columns whose change moves an episode between rollup rows.
COUNTED = [
    "model", "exit_reason", "resolved", "n_steps", "prompt_tokens", "completion_tokens", "task_id",
    "repository", "origin",
]  # fmt: skip
#: (dimension, group key of a row) of the rollup; "unknown" stands for a missing copy.
DIMENSIONS = [
    ("all", "''"),
    ("repository", "coalesce({row}.repository, 'unknown')"),
    ("origin", "coalesce({row}.origin, 'unknown')"),
    ("model", "{row}.model"),
]
TRIGGERS = [("insert", "INSERT"), ("update", "UPDATE"), ("delete", "DELETE")]

episodes = sa.table(
    "episodes", sa.column("task_id", sa.Integer()), *(sa.column(name, type_) for name, type_ in COPIES)
)
tasks = sa.table(
    "tasks",
    sa.column("id", sa.Integer()),
    sa.column("image_id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("operator", sa.String()),
    sa.column("meta", JSON),
)
images = sa.table("images", sa.column("id", sa.Integer()), sa.column("repository_id", sa.Integer()))
repositories = sa.table("repositories", sa.column("id", sa.Integer()), sa.column("name", sa.String()))


def upgrade() -> None:
    for name, type_ in COPIES:
        op.add_column("episodes", sa.Column(name, type_, nullable=True))
    task = tasks.c.id == episodes.c.task_id
    repository = (
        sa.select(repositories.c.name)
        .join(images, images.c.repository_id == repositories.c.id)
        .join(tasks, tasks.c.image_id == images.c.id)
        .where(task)
    )
    origin = sa.case(
        (tasks.c.operator.is_not(None), tasks.c.operator),
        (tasks.c.meta["commit"].as_string().is_not(None), sa.literal("mined")),
        else_=sa.literal("imported"),
    )
    op.execute(
        sa.update(episodes).values(
            repository=repository.scalar_subquery(),
            task_kind=sa.select(tasks.c.kind).where(task).scalar_subquery(),
            origin=sa.select(origin).where(task).scalar_subquery(),
        )
    )
    op.drop_index("ix_episodes_summary", table_name="episodes")
    op.create_index("ix_episodes_summary", "episodes", SUMMARY)
    for name, columns in NEW_INDEXES:
        op.create_index(name, "episodes", columns)

    count = sa.BigInteger()
    op.create_table(
        "stats_outcomes",
        *_group_columns(),
        sa.Column("exit_reason", sa.String(), nullable=False),
        sa.Column("episodes", count, nullable=False),
        sa.Column("graded", count, nullable=False),
        sa.Column("resolved", count, nullable=False),
        sa.PrimaryKeyConstraint("dimension", "group_key", "exit_reason", name=op.f("pk_stats_outcomes")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stats_values",
        *_group_columns(),
        sa.Column("measure", sa.String(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("episodes", count, nullable=False),
        sa.PrimaryKeyConstraint("dimension", "group_key", "measure", "value", name=op.f("pk_stats_values")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stats_tasks",
        *_group_columns(),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("episodes", count, nullable=False),
        sa.Column("resolved", count, nullable=False),
        sa.PrimaryKeyConstraint("dimension", "group_key", "task_id", name=op.f("pk_stats_tasks")),
        sqlite_with_rowid=False,
    )
    # The stored episodes, counted as the triggers count them from now on.
    for statement in _rollup_from([("episodes", 1)], conflicts=False):
        op.execute(statement)
    if op.get_bind().dialect.name == "postgresql":
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()


def _group_columns() -> list[sa.Column]:
    return [
        sa.Column("dimension", sa.String(), nullable=False),
        sa.Column("group_key", sa.String(), nullable=False),
    ]


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, _event in TRIGGERS:
        on = " ON episodes" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS forager_stats_{name}{on}")
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS forager_stats_{name}()")
    for table in ("stats_tasks", "stats_values", "stats_outcomes"):
        op.drop_table(table)
    for name, _columns in NEW_INDEXES:
        op.drop_index(name, table_name="episodes")
    op.drop_index("ix_episodes_summary", table_name="episodes")
    op.create_index("ix_episodes_summary", "episodes", OLD_SUMMARY)
    with op.batch_alter_table("episodes") as batch:
        for name, _type in COPIES:
            batch.drop_column(name)


# ---- the rollup's SQL -----------------------------------------------------------------------------------


def _rounded(tokens: str) -> str:
    """SQL of ``tokens`` exact below 1,000, else rounded down to three significant digits (integers)."""
    cases = [f"WHEN {tokens} < 1000 THEN {tokens}"]
    for digits in range(4, 10):
        step = 10 ** (digits - 3)
        cases.append(f"WHEN {tokens} < {10**digits} THEN {tokens} / {step} * {step}")
    return f"CASE {' '.join(cases)} ELSE {tokens} / {10**7} * {10**7} END"


def _measures(row: str, sign: str) -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
    """Per rollup table: its key columns after (dimension, group_key) with their SQL over ``row``, and
    its counted columns with what one episode of ``row`` adds to them (times ``sign``)."""
    graded = f"{sign} * CASE WHEN {row}.resolved IS NOT NULL THEN 1 ELSE 0 END"
    resolved = f"{sign} * CASE WHEN {row}.resolved THEN 1 ELSE 0 END"
    episodes = ("episodes", sign)
    return {
        "stats_outcomes": ([f"{row}.exit_reason"], [episodes, ("graded", graded), ("resolved", resolved)]),
        "stats_values:turns": (["'turns'", f"{row}.n_steps"], [episodes]),
        "stats_values:tokens": (
            ["'tokens'", _rounded(f"({row}.prompt_tokens + {row}.completion_tokens)")],
            [episodes],
        ),
        "stats_tasks": ([f"{row}.task_id"], [episodes, ("resolved", resolved)]),
    }


KEYS = {
    "stats_outcomes": ["exit_reason"],
    "stats_values": ["measure", "value"],
    "stats_tasks": ["task_id"],
}


def _upsert_tail(table: str, counted: list[str]) -> str:
    keys = ", ".join(["dimension", "group_key", *KEYS[table]])
    added = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in counted)
    return f"ON CONFLICT ({keys}) DO UPDATE SET {added}"


def _rollup_from(sources: list[tuple[str, int]], *, conflicts: bool = True) -> list[str]:
    """One INSERT per rollup table adding up the episodes of ``sources`` ((relation, sign) pairs: the
    episodes table or a transition table), grouped, in key order, skipping groups whose sums are zero."""
    statements = []
    for target in ("stats_outcomes", "stats_values:turns", "stats_values:tokens", "stats_tasks"):
        table = target.split(":")[0]
        parts, counted = [], []
        for relation, sign in sources:
            keys, counts = _measures(relation, str(sign))[target]
            counted = [name for name, _sql in counts]
            for dimension, group_key in DIMENSIONS:
                columns = [f"'{dimension}'", group_key.format(row=relation), *keys]
                columns = [f"{sql} AS k{i}" for i, sql in enumerate(columns)]
                columns += [f"{sql} AS {name}" for name, sql in counts]
                parts.append(f"SELECT {', '.join(columns)} FROM {relation}")
        n_keys = 2 + len(KEYS[table])
        group = ", ".join(f"k{i}" for i in range(n_keys))
        sums = ", ".join(f"sum({name})" for name in counted)
        nonzero = " OR ".join(f"sum({name}) <> 0" for name in counted)
        columns = ", ".join(["dimension", "group_key", *KEYS[table], *counted])
        statement = (
            f"INSERT INTO {table} ({columns}) SELECT {group}, {sums} "
            f"FROM ({' UNION ALL '.join(parts)}) AS delta GROUP BY {group} HAVING {nonzero} ORDER BY {group}"
        )
        statements.append(f"{statement} {_upsert_tail(table, counted)}" if conflicts else statement)
    return statements


def _row_upserts(row: str, sign: int) -> list[str]:
    """The upserts that add one episode (``NEW`` or ``OLD``, times ``sign``) to the rollup, in key order."""
    statements = []
    for dimension, group_key in DIMENSIONS:
        for target, (keys, counts) in _measures(row, str(sign)).items():
            table = target.split(":")[0]
            values = [f"'{dimension}'", group_key.format(row=row), *keys, *(sql for _name, sql in counts)]
            columns = ", ".join(["dimension", "group_key", *KEYS[table], *(name for name, _sql in counts)])
            statements.append(
                f"INSERT INTO {table} ({columns}) VALUES ({', '.join(values)}) "
                f"{_upsert_tail(table, [name for name, _sql in counts])}"
            )
    return statements


def _create_sqlite_triggers() -> None:
    bodies = {
        "insert": _row_upserts("NEW", 1),
        "update": _row_upserts("OLD", -1) + _row_upserts("NEW", 1),
        "delete": _row_upserts("OLD", -1),
    }
    for name, event in TRIGGERS:
        on = f"UPDATE OF {', '.join(COUNTED)}" if name == "update" else event
        body = "".join(f"{statement};\n" for statement in bodies[name])
        op.execute(
            f"CREATE TRIGGER forager_stats_{name} AFTER {on} ON episodes FOR EACH ROW BEGIN\n{body}END;"
        )


def _create_postgresql_triggers() -> None:
    sources = {
        "insert": ([("new_rows", 1)], "REFERENCING NEW TABLE AS new_rows"),
        "update": (
            [("old_rows", -1), ("new_rows", 1)],
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        ),
        "delete": ([("old_rows", -1)], "REFERENCING OLD TABLE AS old_rows"),
    }
    for name, event in TRIGGERS:
        relations, referencing = sources[name]
        body = "".join(f"{statement};\n" for statement in _rollup_from(relations))
        op.execute(
            f"CREATE OR REPLACE FUNCTION forager_stats_{name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{body}RETURN NULL;\nEND $$"
        )
        op.execute(
            f"CREATE TRIGGER forager_stats_{name} AFTER {event} ON episodes {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION forager_stats_{name}()"
        )
