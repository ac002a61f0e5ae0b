"""Initial schema: repositories, images, tasks, episodes, steps.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Column types are spelled as their storage, not as ``storage.types`` classes, so this script stays valid
whatever those classes become: ``CompressedText`` is a binary column, ``UTCDateTime`` a timestamp with time
zone, enums are short strings.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
COMPRESSED = sa.LargeBinary()
ENUM = sa.String(length=16)


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("commit", sa.String(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repositories")),
        sa.UniqueConstraint("source", "commit", name=op.f("uq_repositories_source_commit")),
    )
    op.create_index(op.f("ix_repositories_name"), "repositories", ["name"])

    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.Column("docker_id", sa.String(), nullable=True),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("failure_class", sa.String(), nullable=True),
        sa.Column("base_image", sa.String(), nullable=False),
        sa.Column("recipe", JSON, nullable=False),
        sa.Column("recipe_hash", sa.String(), nullable=False),
        sa.Column("test_command", sa.String(), nullable=True),
        sa.Column("baseline", JSON, nullable=False),
        sa.Column("flaky", JSON, nullable=False),
        sa.Column("tests_passed", sa.Integer(), nullable=False),
        sa.Column("tests_total", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("unique_bytes", sa.BigInteger(), nullable=True),
        sa.Column("build_seconds", sa.Double(), nullable=True),
        sa.Column("log_path", sa.String(), nullable=True),
        sa.Column("log_tail", COMPRESSED, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"], ["repositories.id"], name=op.f("fk_images_repository_id_repositories")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("tag", name=op.f("uq_images_tag")),
    )
    op.create_index(op.f("ix_images_repository_id"), "images", ["repository_id"])
    op.create_index(op.f("ix_images_status"), "images", ["status"])
    op.create_index(op.f("ix_images_created_at"), "images", ["created_at"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("setup_patch", COMPRESSED, nullable=False),
        sa.Column("gold_patch", COMPRESSED, nullable=False),
        sa.Column("test_patch", COMPRESSED, nullable=False),
        sa.Column("problem_statement", sa.Text(), nullable=False),
        sa.Column("fail_to_pass", JSON, nullable=False),
        sa.Column("pass_to_pass", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_tasks_image_id_images")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("instance_id", name=op.f("uq_tasks_instance_id")),
    )
    op.create_index(op.f("ix_tasks_kind"), "tasks", ["kind"])
    op.create_index(op.f("ix_tasks_image_id"), "tasks", ["image_id"])
    op.create_index(op.f("ix_tasks_status"), "tasks", ["status"])
    op.create_index(op.f("ix_tasks_created_at"), "tasks", ["created_at"])

    op.create_table(
        "episodes",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("policy", sa.String(), nullable=True),
        sa.Column("action_format", sa.String(), nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("exit_reason", sa.String(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=True),
        sa.Column("reward", sa.Double(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("n_steps", sa.Integer(), nullable=False),
        sa.Column("final_patch", COMPRESSED, nullable=True),
        sa.Column("grade", JSON, nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_episodes_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_episodes")),
    )
    op.create_index(op.f("ix_episodes_task_id"), "episodes", ["task_id"])
    op.create_index(op.f("ix_episodes_model"), "episodes", ["model"])
    op.create_index(op.f("ix_episodes_status"), "episodes", ["status"])
    op.create_index(op.f("ix_episodes_resolved"), "episodes", ["resolved"])
    op.create_index(op.f("ix_episodes_created_at"), "episodes", ["created_at"])

    op.create_table(
        "steps",
        # INTEGER on SQLite: only that exact type makes the primary key an auto-incrementing rowid.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("episode_id", sa.String(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("thought", COMPRESSED, nullable=True),
        sa.Column("action", JSON, nullable=False),
        sa.Column("observation", COMPRESSED, nullable=False),
        sa.Column("model_seconds", sa.Double(), nullable=False),
        sa.Column("tool_seconds", sa.Double(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["episodes.id"],
            name=op.f("fk_steps_episode_id_episodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        sa.UniqueConstraint("episode_id", "index", name=op.f("uq_steps_episode_id_index")),
    )
    op.create_index(op.f("ix_steps_episode_id"), "steps", ["episode_id"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children go before the tables they reference.
    for table in ("steps", "episodes", "tasks", "images", "repositories"):
        op.drop_table(table)
