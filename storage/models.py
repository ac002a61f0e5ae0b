"""The stored records: repositories, their images, tasks on an image, episodes on a task, and steps.

Plain SQLAlchemy 2.0 typed ORM classes. Everything that filters (repository name, kind, operator, status,
resolved, model, exit reason, creation time) has an index; episodes have composite indexes ending in
(created_at, id), the order listings page through, so that a filtered page reads only its own rows. Large
text is zlib-compressed in the row (``CompressedText``, ``CompressedJSON``), JSON that SQL filters on is
JSONB on PostgreSQL, and timestamps are timezone-aware UTC.

Changing a model means writing a migration: see ``storage/migrations/__init__.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import BigInteger, Enum, ForeignKey, Index, Integer, MetaData, Text, UniqueConstraint
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from storage.types import CompressedJSON, CompressedText, PortableJSON, UTCDateTime, utcnow

# Deterministic constraint and index names, so that migrations can address them by name on every backend
# (SQLite batch migrations must name a constraint to drop it; unnamed ones get backend-chosen names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every Forager table; its ``metadata`` is what the migrations must produce."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class ImageStatus(StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


class TaskKind(StrEnum):
    MUTATE_FIX = "mutate_fix"
    ISSUE_FIX = "issue_fix"


class TaskStatus(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    INVALID = "invalid"


class EpisodeStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


class WorkState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"


def _str_enum(enum_class: type[StrEnum]) -> Enum:
    """A VARCHAR holding the enum's values, checked in Python only.

    Not a native PostgreSQL ENUM nor a CHECK constraint: adding a value later then needs no migration.
    Loaded values are enum members, which compare equal to their plain strings.
    """
    return Enum(
        enum_class,
        native_enum=False,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


def new_episode_id() -> str:
    """A fresh episode id: 32 hex digits of a random UUID."""
    return uuid.uuid4().hex


class Repository(Base):
    """A source repository at one commit, as the user named it."""

    __tablename__ = "repositories"
    # A NULL commit (pypi: or a non-git path) does not take part in uniqueness: NULLs are distinct in SQL.
    # Store.get_or_create_repository serializes creation so that such rows are not duplicated either.
    __table_args__ = (UniqueConstraint("source", "commit"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The spec as given: ``pypi:attrs==23.1.0``, ``https://github.com/o/r``, ``/path``.
    source: Mapped[str]
    #: ``owner/name`` or the package name.
    name: Mapped[str] = mapped_column(index=True)
    commit: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    images: Mapped[list[Image]] = relationship(back_populates="repository")

    def __repr__(self) -> str:
        return f"<Repository {self.id} {self.name!r} source={self.source!r} commit={self.commit!r}>"


class Image(Base):
    """A built (or failed) Docker image of a repository, with its install recipe and test baseline."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    tag: Mapped[str] = mapped_column(unique=True)
    docker_id: Mapped[str | None]
    status: Mapped[ImageStatus] = mapped_column(_str_enum(ImageStatus), index=True)
    #: Why the build failed, as a short class name (e.g. ``no_tests_found``); None unless failed.
    failure_class: Mapped[str | None]
    base_image: Mapped[str]
    recipe: Mapped[dict[str, Any]] = mapped_column(PortableJSON)
    recipe_hash: Mapped[str]
    test_command: Mapped[str | None]
    #: Test id -> outcome (``passed``, ``failed``, ``skipped`` ...) on the unmodified repository.
    baseline: Mapped[dict[str, str]] = mapped_column(PortableJSON, default=dict)
    #: Test ids whose outcome changed between baseline runs.
    flaky: Mapped[list[str]] = mapped_column(PortableJSON, default=list)
    #: Test id -> seconds a baseline run took for it (the longest of the runs); None when not measured.
    durations: Mapped[dict[str, float] | None] = mapped_column(PortableJSON)
    #: The suite outgrew the baseline's time budget: ``baseline`` holds the test files it completed.
    partial: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    tests_passed: Mapped[int] = mapped_column(default=0)
    tests_total: Mapped[int] = mapped_column(default=0)
    # Image sizes exceed 2 GiB, the limit of a 32-bit INTEGER on PostgreSQL.
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    unique_bytes: Mapped[int | None] = mapped_column(BigInteger)
    build_seconds: Mapped[float | None]
    log_path: Mapped[str | None]
    #: The end of the build log, enough to diagnose a failure without the file.
    log_tail: Mapped[str | None] = mapped_column(CompressedText)
    #: Where ``forager images push`` put it, digest-pinned (``HOST[:PORT]/PREFIX/NAME:TAG@sha256:…``), for
    #: backends that pull; None if never pushed.
    registry_ref: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    repository: Mapped[Repository] = relationship(back_populates="images")
    tasks: Mapped[list[Task]] = relationship(back_populates="image")

    def __repr__(self) -> str:
        return (
            f"<Image {self.id} {self.tag!r} {self.status} "
            f"tests={self.tests_passed}/{self.tests_total} failure={self.failure_class!r}>"
        )


class Task(Base):
    """A repair task on an image: the broken start state, the problem statement, and how to grade it."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[str] = mapped_column(unique=True)
    kind: Mapped[TaskKind] = mapped_column(_str_enum(TaskKind), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    status: Mapped[TaskStatus] = mapped_column(
        _str_enum(TaskStatus), index=True, default=TaskStatus.UNVERIFIED
    )
    #: Applied to the image's checkout to reach the broken start state ("" if the image is the start).
    setup_patch: Mapped[str] = mapped_column(CompressedText, default="")
    #: A reference fix: applied to the start state, it makes ``fail_to_pass`` pass.
    gold_patch: Mapped[str] = mapped_column(CompressedText, default="")
    #: Tests added or changed for grading, applied before running them ("" if none).
    test_patch: Mapped[str] = mapped_column(CompressedText, default="")
    problem_statement: Mapped[str] = mapped_column(Text)
    fail_to_pass: Mapped[list[str]] = mapped_column(PortableJSON, default=list)
    pass_to_pass: Mapped[list[str]] = mapped_column(PortableJSON, default=list)
    #: Provenance: mutation operator, file, function, line, source instance id ... The attribute cannot be
    #: called ``metadata``, which declarative classes reserve.
    meta: Mapped[dict[str, Any]] = mapped_column(PortableJSON, default=dict)
    #: The mutation operator of a mutate-fix task (``meta["operator"]``, kept in step with it), a column
    #: so that episodes can be filtered and counted by operator through an index; None for other tasks.
    operator: Mapped[str | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    image: Mapped[Image] = relationship(back_populates="tasks")
    episodes: Mapped[list[Episode]] = relationship(back_populates="task")

    @validates("meta")
    def _operator_from_meta(self, _key: str, meta: dict[str, Any] | None) -> dict[str, Any] | None:
        operator = (meta or {}).get("operator")
        self.operator = operator if isinstance(operator, str) else None
        return meta

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.instance_id!r} {self.kind} {self.status} image={self.image_id}>"


#: Where a task comes from, for grouping: its mutation operator (mutate-fix); ``mined`` for an issue-fix
#: task mined from history (it records its commit); ``imported`` for one from a SWE-bench-style dataset.
ORIGIN = sa.case(
    (Task.operator.is_not(None), Task.operator),
    (Task.meta["commit"].as_string().is_not(None), sa.literal("mined")),
    else_=sa.literal("imported"),
)
#: Origins that are not operators.
ORIGINS_WITHOUT_OPERATOR = ("mined", "imported")


def _from_task(field: int) -> Any:
    """A column default: field ``field`` of (repository name, kind, origin) of the inserted episode's task.

    Read once per task and statement (a bulk insert of many episodes of one task reads it once), from the
    connection that inserts, so every insert through SQLAlchemy (ORM or Core) fills the copies.
    """

    def default(context: DefaultExecutionContext) -> str:
        task_id = context.get_current_parameters().get("task_id")  # missing: the insert fails on it
        cache = context.__dict__.setdefault("_forager_tasks", {})
        if task_id not in cache:
            query = (
                sa.select(Repository.name, Task.kind, ORIGIN)
                .join(Task.image)
                .join(Image.repository)
                .where(Task.id == task_id)
            )
            cache[task_id] = context.connection.execute(query).one_or_none() or (None, None, None)
        return cache[task_id][field]

    return default


#: The episode columns of the covering index that statistics scan when filtered, in the order of their
#: per-model histogram, which then reads the index in order instead of sorting.
SUMMARY_COLUMNS = (
    "model", "exit_reason", "resolved", "n_steps", "prompt_tokens", "completion_tokens", "task_id",
    "created_at", "status", "action_format", "repository", "task_kind", "origin",
)  # fmt: skip


class Episode(Base):
    """One attempt of a model (or policy) at a task, and its outcome. Its trajectory is ``steps``."""

    __tablename__ = "episodes"
    # Listings page through episodes in (created_at, id) order: each filter people use leads an index
    # that continues in that order, so a page is a range scan of its own rows, without a sort.
    __table_args__ = (
        Index("ix_episodes_created_at_id", "created_at", "id"),
        Index("ix_episodes_task_id_created_at", "task_id", "created_at", "id"),
        Index("ix_episodes_model_created_at", "model", "created_at", "id"),
        Index("ix_episodes_model_resolved_created_at", "model", "resolved", "created_at", "id"),
        Index("ix_episodes_resolved_created_at", "resolved", "created_at", "id"),
        Index("ix_episodes_exit_reason_created_at", "exit_reason", "created_at", "id"),
        Index("ix_episodes_repository_created_at", "repository", "created_at", "id"),
        Index("ix_episodes_task_kind_created_at", "task_kind", "created_at", "id"),
        Index("ix_episodes_origin_created_at", "origin", "created_at", "id"),
        # The viewer's sort by turns reads this index in order instead of sorting every selected row.
        Index("ix_episodes_n_steps_id", "n_steps", "id"),
        # Covers every column statistics read (storage/stats.py) and filter on: they scan this narrow
        # index instead of the wide rows, and can stay within it when filtering by model.
        Index("ix_episodes_summary", *SUMMARY_COLUMNS),
        # The schema's guarantee that a work item yields at most one stored episode, however many workers
        # ran it (one presumed dead that came back included). NULLs (episodes not from the queue) repeat.
        Index("ix_episodes_work_item_id", "work_item_id", unique=True),
    )

    # Generated client-side in __init__ rather than by the database, so distributed workers can name an
    # episode (logs, artifacts) before it is inserted.
    id: Mapped[str] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    model: Mapped[str]
    #: The policy behind the model endpoint when it is not a plain model (``oracle``, ``replay`` ...).
    policy: Mapped[str | None]
    #: How actions are written: OpenAI tool calls or the CWM text format.
    action_format: Mapped[str]
    status: Mapped[EpisodeStatus] = mapped_column(_str_enum(EpisodeStatus), index=True)
    #: Why the loop stopped: ``submitted``, ``max_turns``, ``max_tokens``, ``wall_clock``,
    #: ``context_overflow``, ``format_errors``, ``model_error``, ``infra_error`` ...
    exit_reason: Mapped[str]
    #: Whether the final patch fixes the task; None when it was not graded.
    resolved: Mapped[bool | None]
    reward: Mapped[float | None]
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    n_steps: Mapped[int] = mapped_column(default=0)
    final_patch: Mapped[str | None] = mapped_column(CompressedText)
    #: The grader's report (per-test outcomes ...); None when not graded.
    grade: Mapped[dict[str, Any] | None] = mapped_column(PortableJSON)
    #: What the episode ran with: sampling parameters, budgets.
    config: Mapped[dict[str, Any]] = mapped_column(PortableJSON, default=dict)
    #: The conversation's opening messages, as the model saw them (see ``forager.conversation``).
    system_prompt: Mapped[str | None] = mapped_column(CompressedText)
    task_prompt: Mapped[str | None] = mapped_column(CompressedText)
    #: The OpenAI tool schemas offered with every request; None when none were (the CWM text format
    #: describes its tools in the system prompt).
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(CompressedJSON)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The work item (``forager worker``) this episode completed; None when run outside the queue.
    work_item_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Copies of the task's repository name, kind and origin (``ORIGIN``: operator, ``mined`` or
    #: ``imported``), written at insert by defaults that read the task, so that listings and statistics
    #: filter and group on the episodes alone. A task's provenance does not change; None only for a row
    #: inserted without SQLAlchemy.
    repository: Mapped[str | None] = mapped_column(default=_from_task(0))
    task_kind: Mapped[TaskKind | None] = mapped_column(_str_enum(TaskKind), default=_from_task(1))
    origin: Mapped[str | None] = mapped_column(default=_from_task(2))

    task: Mapped[Task] = relationship(back_populates="episodes")
    # passive_deletes: the database's ON DELETE CASCADE removes the steps, without loading them first.
    steps: Mapped[list[Step]] = relationship(
        back_populates="episode",
        order_by="Step.index",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("id", new_episode_id())
        super().__init__(**kwargs)

    def __repr__(self) -> str:
        return (
            f"<Episode {self.id} task={self.task_id} model={self.model!r} {self.status} "
            f"exit={self.exit_reason!r} resolved={self.resolved} steps={self.n_steps}>"
        )


class Step(Base):
    """One turn of an episode: what the model said, the action it took, and what it observed."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("episode_id", "index"),)

    # 64-bit on PostgreSQL: steps are the largest table (billions of rows at farming scale). SQLite keeps
    # INTEGER, the only type that makes a primary key an auto-incrementing rowid (and it is 64-bit there).
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # Looked up through the (episode_id, index) unique constraint's index: no index of its own.
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"))
    #: Position in the episode, from 0.
    index: Mapped[int]
    #: The model's text besides the action, if any.
    thought: Mapped[str | None] = mapped_column(CompressedText)
    #: ``{"tool": name, "arguments": {...}}``, or the raw unparsed text when the model's output was malformed.
    action: Mapped[dict[str, Any] | str] = mapped_column(PortableJSON)
    observation: Mapped[str] = mapped_column(CompressedText)
    #: The assistant message exactly as the model sent it and as it was appended to the conversation
    #: (role, content, tool_calls with their ids and raw argument text); None for steps stored before
    #: Forager recorded it.
    message: Mapped[dict[str, Any] | None] = mapped_column(CompressedJSON)
    model_seconds: Mapped[float] = mapped_column(default=0.0)
    tool_seconds: Mapped[float] = mapped_column(default=0.0)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    episode: Mapped[Episode] = relationship(back_populates="steps")

    def __repr__(self) -> str:
        return f"<Step {self.episode_id}#{self.index} action={self.action!r:.80}>"


class WorkItem(Base):
    """One episode to run: attempt ``attempt`` of a task, claimed by one worker at a time under a lease.

    A worker claims a queued item (``leased``: owner and expiry set, ``attempts`` counted), extends the
    lease while it runs the episode, and stores the episode and marks the item ``done`` in one
    transaction, which is refused if the lease is no longer its own. An item whose lease expired (its
    worker died) is queued again, or ``failed`` once ``attempts`` reached ``max_attempts``.
    """

    __tablename__ = "work_items"
    __table_args__ = (
        UniqueConstraint("task_id", "action_format", "attempt"),
        # Claims take the oldest queued item and reaping the leases that expired first: each reads one
        # index range, however many items wait.
        Index("ix_work_items_state_id", "state", "id"),
        Index("ix_work_items_state_lease_expires_at", "state", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    #: Which of the task's episodes this is, from 0 (``forage --episodes-per-task``).
    attempt: Mapped[int]
    action_format: Mapped[str]
    #: The episode's budgets (and prompt templates, if not the packaged ones) as enqueued.
    config: Mapped[dict[str, Any]] = mapped_column(PortableJSON, default=dict)
    state: Mapped[WorkState] = mapped_column(_str_enum(WorkState), default=WorkState.QUEUED)
    #: Claims so far; a claim whose lease expired counts, a release on shutdown does not.
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    #: ``host:pid:token`` of the worker holding the lease; None unless leased.
    lease_owner: Mapped[str | None]
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    #: The stored episode, once done (or failed with an episode).
    episode_id: Mapped[str | None] = mapped_column(ForeignKey("episodes.id", ondelete="SET NULL"))
    #: Why the item failed; "" otherwise.
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    task: Mapped[Task] = relationship()

    def __repr__(self) -> str:
        return (
            f"<WorkItem {self.id} task={self.task_id}#{self.attempt} {self.state} "
            f"attempts={self.attempts}/{self.max_attempts} owner={self.lease_owner!r}>"
        )


class TraceKind(StrEnum):
    TEST = "test"
    FUNCTION = "function"


class TraceStatus(StrEnum):
    OK = "ok"
    DROPPED = "dropped"


class Trace(Base):
    """One execution trace of an entry point (a test, or a repository function a test calls) in an image.

    Entry points that gave no usable trace are kept too, as ``dropped`` rows with the reason, so that a
    resumed run does not try them again and the share dropped can be counted.
    """

    __tablename__ = "traces"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    #: What makes the entry point unique in its image: kind, test id and function.
    key: Mapped[str] = mapped_column(unique=True)
    #: ``test`` (the test function is the entry) or ``function`` (a repository function a test calls).
    kind: Mapped[TraceKind] = mapped_column(_str_enum(TraceKind), index=True)
    #: The pytest node id of the test that runs the entry point.
    test: Mapped[str] = mapped_column(Text)
    #: The entry function: its file (relative to the repository), qualified name and ``def`` line.
    path: Mapped[str]
    qualname: Mapped[str]
    line: Mapped[int]
    status: Mapped[TraceStatus] = mapped_column(_str_enum(TraceStatus), index=True)
    #: Why a trace was dropped: ``frames`` or ``wall_clock`` (over budget), ``nondeterministic``,
    #: ``generator``, ``not_called``, ``crashed``; "" when kept.
    drop_reason: Mapped[str] = mapped_column(default="")
    #: Whether recording it twice gave the same trace; None when it was not recorded twice.
    deterministic: Mapped[bool | None]
    n_frames: Mapped[int] = mapped_column(default=0)
    #: Values whose rendering was cut (length, item count or depth), and values whose repr raised.
    truncated_values: Mapped[int] = mapped_column(default=0)
    unrepresentable_values: Mapped[int] = mapped_column(default=0)
    seconds: Mapped[float] = mapped_column(default=0.0)
    #: The source context in CWM's form (entry ``def`` line marked), "" when dropped.
    context: Mapped[str] = mapped_column(CompressedText, default="")
    #: The recording: ``files``, ``blocks``, ``source`` and ``frames`` (see ``envs.trace_format``).
    data: Mapped[dict[str, Any] | None] = mapped_column(CompressedJSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    image: Mapped[Image] = relationship()

    def __repr__(self) -> str:
        return f"<Trace {self.id} {self.key!r} {self.status} frames={self.n_frames}>"
