"""The episode store at scale: listing indexes, the task operator, and what the model saw.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

- Episodes get composite indexes that end in (created_at, id), the order listings page through, in place
  of the single-column ones, and a covering index of what statistics read; steps lose the index their
  (episode_id, index) constraint already provides.
- Tasks get ``operator``, a copy of ``meta["operator"]`` that an index can serve.
- Episodes get ``system_prompt`` and ``task_prompt`` (moved out of ``config``, compressed) and ``tools``
  (the offered tool schemas, compressed JSON); steps get ``message`` (the assistant message as sent,
  compressed JSON). Episodes stored before this revision have no tools and their steps no message.
"""

import zlib
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COMPRESSED = sa.LargeBinary()

#: (name, columns) of the episode indexes this revision adds.
EPISODE_INDEXES = [
    ("ix_episodes_created_at_id", ["created_at", "id"]),
    ("ix_episodes_task_id_created_at", ["task_id", "created_at", "id"]),
    ("ix_episodes_model_created_at", ["model", "created_at", "id"]),
    ("ix_episodes_model_resolved_created_at", ["model", "resolved", "created_at", "id"]),
    ("ix_episodes_resolved_created_at", ["resolved", "created_at", "id"]),
    ("ix_episodes_exit_reason_created_at", ["exit_reason", "created_at", "id"]),
    (
        "ix_episodes_summary",
        [
            "model",
            "exit_reason",
            "resolved",
            "n_steps",
            "prompt_tokens",
            "completion_tokens",
            "task_id",
            "created_at",
            "status",
            "action_format",
        ],
    ),
]
#: (name, column) of the single-column episode indexes they replace.
OLD_EPISODE_INDEXES = [
    ("ix_episodes_task_id", "task_id"),
    ("ix_episodes_model", "model"),
    ("ix_episodes_resolved", "resolved"),
    ("ix_episodes_created_at", "created_at"),
]
PROMPTS = ("system_prompt", "task_prompt")
#: Episodes rewritten per statement when moving the prompts.
BATCH = 500

episodes = sa.table(
    "episodes",
    sa.column("id", sa.String()),
    sa.column("config", JSON),
    *(sa.column(name, COMPRESSED) for name in PROMPTS),
)
tasks = sa.table("tasks", sa.column("meta", JSON), sa.column("operator", sa.String()))


def upgrade() -> None:
    op.add_column("tasks", sa.Column("operator", sa.String(), nullable=True))
    op.create_index(op.f("ix_tasks_operator"), "tasks", ["operator"])
    op.execute(sa.update(tasks).values(operator=tasks.c.meta["operator"].as_string()))

    for name in (*PROMPTS, "tools"):
        op.add_column("episodes", sa.Column(name, COMPRESSED, nullable=True))
    for name, _column in OLD_EPISODE_INDEXES:
        op.drop_index(name, table_name="episodes")
    for name, columns in EPISODE_INDEXES:
        op.create_index(name, "episodes", columns)
    move = (
        sa.update(episodes)
        .where(episodes.c.id == sa.bindparam("episode_id"))
        .values(
            config=sa.bindparam("new_config", type_=JSON),
            **{name: sa.bindparam(f"new_{name}", type_=COMPRESSED) for name in PROMPTS},
        )
    )
    for batch in _batches_with_prompts():
        rows = []
        for episode_id, config in batch:
            row = {"episode_id": episode_id}
            for name in PROMPTS:
                text = config.pop(name, None)
                row[f"new_{name}"] = None if text is None else _compress(text)
            rows.append({**row, "new_config": config})
        if rows:
            op.get_bind().execute(move, rows)

    op.add_column("steps", sa.Column("message", COMPRESSED, nullable=True))
    op.drop_index("ix_steps_episode_id", table_name="steps")


def downgrade() -> None:
    op.create_index("ix_steps_episode_id", "steps", ["episode_id"])
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("message")

    bind = op.get_bind()
    with_prompts = sa.or_(*(episodes.c[name].is_not(None) for name in PROMPTS))
    for row in bind.execute(sa.select(episodes).where(with_prompts)).all():
        config = dict(row.config)
        for name in PROMPTS:
            if row._mapping[name] is not None:
                config[name] = zlib.decompress(row._mapping[name]).decode("utf-8", "surrogatepass")
        op.execute(sa.update(episodes).where(episodes.c.id == row.id).values(config=config))
    for name, _columns in EPISODE_INDEXES:
        op.drop_index(name, table_name="episodes")
    for name, column in OLD_EPISODE_INDEXES:
        op.create_index(name, "episodes", [column])
    with op.batch_alter_table("episodes") as batch:
        for name in (*PROMPTS, "tools"):
            batch.drop_column(name)

    op.drop_index(op.f("ix_tasks_operator"), table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("operator")


def _batches_with_prompts() -> Iterator[list[tuple[str, dict]]]:
    """(id, config) of the episodes whose config holds a prompt, a batch at a time in id order."""
    bind = op.get_bind()
    last = ""
    while True:
        rows = bind.execute(
            sa.select(episodes.c.id, episodes.c.config)
            .where(episodes.c.id > last)
            .order_by(episodes.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        yield [(id_, dict(config)) for id_, config in rows if any(name in config for name in PROMPTS)]
        last = rows[-1][0]


def _compress(text: str) -> bytes:
    """As ``storage.types.CompressedText`` stores text (spelled out, so this script never changes)."""
    return zlib.compress(text.encode("utf-8", "surrogatepass"), 6)
