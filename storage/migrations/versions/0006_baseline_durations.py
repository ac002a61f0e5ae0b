"""Per-test durations and partial baselines on images.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

- ``images.durations``: test id -> seconds of the baseline's runs, so that validation runs cheap tests
  first; NULL for images built before it was recorded (their durations are unknown, not zero).
- ``images.partial``: the baseline covers only the test files its time budget reached; existing images
  ran their whole suite or failed ``timeout``, so they are not partial.

Columns are added without batch mode: SQLite adds a nullable column, or one with a constant default,
in place (no table rebuild). Dropping them needs batch mode on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("images", sa.Column("durations", JSON, nullable=True))
    op.add_column("images", sa.Column("partial", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("partial")
        batch.drop_column("durations")
