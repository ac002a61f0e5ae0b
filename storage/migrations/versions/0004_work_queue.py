"""The work queue and registry references.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

- ``work_items``: episodes to run, claimed by workers under leases (see ``storage.queue``).
- ``episodes.work_item_id``, unique: an item yields at most one stored episode, whatever the workers do.
- ``images.registry_ref``: where ``forager images push`` put the image.

Columns are added without batch mode: SQLite adds a nullable column in place (no table rebuild), and a
unique index needs no constraint.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ENUM = sa.String(length=16)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "work_items",
        sa.Column("id", ID, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("action_format", sa.String(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=True),
        sa.Column("episode_id", sa.String(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_work_items_task_id_tasks")),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["episodes.id"],
            name=op.f("fk_work_items_episode_id_episodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_items")),
        sa.UniqueConstraint(
            "task_id", "action_format", "attempt", name=op.f("uq_work_items_task_id_action_format_attempt")
        ),
    )
    op.create_index("ix_work_items_state_id", "work_items", ["state", "id"])
    op.create_index("ix_work_items_state_lease_expires_at", "work_items", ["state", "lease_expires_at"])
    op.add_column("episodes", sa.Column("work_item_id", sa.BigInteger(), nullable=True))
    op.create_index("ix_episodes_work_item_id", "episodes", ["work_item_id"], unique=True)
    op.add_column("images", sa.Column("registry_ref", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("registry_ref")
    op.drop_index("ix_episodes_work_item_id", table_name="episodes")
    with op.batch_alter_table("episodes") as batch:
        batch.drop_column("work_item_id")
    op.drop_table("work_items")
