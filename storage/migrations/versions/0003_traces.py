"""Execution traces: one row per traced entry point of an image, kept or dropped.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Column types are spelled as their storage (see 0001): the source context and the recording are
zlib-compressed binary columns.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
COMPRESSED = sa.LargeBinary()
ENUM = sa.String(length=16)


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("test", sa.Text(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("qualname", sa.String(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("drop_reason", sa.String(), nullable=False),
        sa.Column("deterministic", sa.Boolean(), nullable=True),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("truncated_values", sa.Integer(), nullable=False),
        sa.Column("unrepresentable_values", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("context", COMPRESSED, nullable=False),
        sa.Column("data", COMPRESSED, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_traces_image_id_images")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traces")),
        sa.UniqueConstraint("key", name=op.f("uq_traces_key")),
    )
    op.create_index(op.f("ix_traces_image_id"), "traces", ["image_id"])
    op.create_index(op.f("ix_traces_kind"), "traces", ["kind"])
    op.create_index(op.f("ix_traces_status"), "traces", ["status"])
    op.create_index(op.f("ix_traces_created_at"), "traces", ["created_at"])


def downgrade() -> None:
    op.drop_table("traces")
