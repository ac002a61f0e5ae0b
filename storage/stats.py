"""``forager db stats``: what the stored episodes amount to, per repository, task origin and model.

Everything is aggregated in SQL (counts, rates, exit reasons, and the percentiles, by ranking rows with
window functions), so the cost is a few scans of the selected episodes and the answer a few rows per
group, whatever the store's size. Percentiles are nearest-rank: the median of 1, 2, 3, 4 is 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.models import Episode, Image, Repository, Task
from storage.queries import EpisodeFilter, conditions

#: Where a task comes from, for grouping: its mutation operator (mutate-fix); ``mined`` for an issue-fix
#: task mined from history (it records its commit); ``imported`` for one from a SWE-bench-style dataset.
ORIGIN = sa.case(
    (Task.operator.is_not(None), Task.operator),
    (Task.meta["commit"].as_string().is_not(None), sa.literal("mined")),
    else_=sa.literal("imported"),
)
#: The groupings ``stats`` reports, by name: what each groups by.
GROUPINGS: dict[str, sa.ColumnElement[Any]] = {
    "repository": Repository.name,
    "origin": ORIGIN,
    "model": Episode.model,
}
_TOTAL = sa.literal("all")


@dataclass(frozen=True)
class GroupStats:
    """The selected episodes of one group (one repository, origin or model; or all of them)."""

    key: str
    episodes: int
    tasks: int
    """Distinct tasks attempted."""
    tasks_resolved: int
    """Distinct tasks with at least one resolved episode."""
    graded: int
    """Episodes graded (not those that ended in an infrastructure failure)."""
    resolved: int
    turns_p50: int | None
    turns_p90: int | None
    tokens_p50: int | None
    """Prompt plus completion tokens of an episode."""
    tokens_p90: int | None
    exit_reasons: dict[str, int] = field(default_factory=dict)
    """Episodes per exit reason, most frequent first."""

    @property
    def resolve_rate(self) -> float | None:
        """Resolved episodes over graded ones; None when none was graded."""
        return self.resolved / self.graded if self.graded else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "resolve_rate": self.resolve_rate}


@dataclass(frozen=True)
class StoreStats:
    """``total`` over all selected episodes, and the same per repository, origin and model."""

    filter: EpisodeFilter
    total: GroupStats
    by_repository: list[GroupStats]
    by_origin: list[GroupStats]
    """Per mutate-fix operator, and ``mined`` / ``imported`` for issue-fix sources."""
    by_model: list[GroupStats]

    def to_json(self) -> dict[str, Any]:
        return {
            "filter": self.filter.to_json(),
            "total": self.total.to_json(),
            **{
                f"by_{name}": [group.to_json() for group in getattr(self, f"by_{name}")]
                for name in GROUPINGS
            },
        }


def compute(session: Session, selection: EpisodeFilter | None) -> StoreStats:
    """The statistics of the episodes ``selection`` picks (all when None)."""
    selection = selection or EpisodeFilter()
    (total,) = _grouped(session, selection, _TOTAL) or [_empty("all")]
    groups = {name: _grouped(session, selection, key) for name, key in GROUPINGS.items()}
    return StoreStats(selection, total, *(groups[name] for name in GROUPINGS))


def _grouped(session: Session, selection: EpisodeFilter, key: sa.ColumnElement[Any]) -> list[GroupStats]:
    """One ``GroupStats`` per value of ``key``, most episodes first."""
    base = (
        sa.select(
            key.label("key"),
            Episode.task_id,
            Episode.resolved,
            Episode.exit_reason,
            Episode.n_steps.label("turns"),
            (Episode.prompt_tokens + Episode.completion_tokens).label("tokens"),
        )
        .join(Episode.task)
        .join(Task.image)
        .join(Image.repository)
        .where(*conditions(selection))
        .cte("selected")
    )
    counts = session.execute(
        sa.select(
            base.c.key,
            sa.func.count(),
            sa.func.count(sa.distinct(base.c.task_id)),
            sa.func.count(sa.distinct(sa.case((base.c.resolved.is_(True), base.c.task_id)))),
            sa.func.count(base.c.resolved),
            sa.func.count(sa.case((base.c.resolved.is_(True), 1))),
        ).group_by(base.c.key)
    ).all()
    reasons: dict[str, dict[str, int]] = {}
    for group, reason, n in session.execute(
        sa.select(base.c.key, base.c.exit_reason, sa.func.count())
        .group_by(base.c.key, base.c.exit_reason)
        .order_by(sa.func.count().desc(), base.c.exit_reason)
    ):
        reasons.setdefault(group, {})[reason] = n
    percentiles = _percentiles(session, base)
    groups = [
        GroupStats(
            str(group),
            episodes,
            tasks,
            tasks_resolved,
            graded,
            resolved,
            *percentiles.get(group, (None, None, None, None)),
            exit_reasons=reasons.get(group, {}),
        )
        for group, episodes, tasks, tasks_resolved, graded, resolved in counts
    ]
    return sorted(groups, key=lambda g: (-g.episodes, g.key))


def _percentiles(session: Session, base: sa.CTE) -> dict[str, tuple[int, int, int, int]]:
    """Per key: nearest-rank p50 and p90 of turns, then of tokens.

    Ranks rows with ROW_NUMBER within each key (portable: SQLite has no percentile aggregate); the
    p-th percentile is the smallest value whose rank is at least p times the group's size.
    """
    ranked = sa.select(
        base.c.key,
        base.c.turns,
        base.c.tokens,
        sa.func.row_number().over(partition_by=base.c.key, order_by=base.c.turns).label("turns_rank"),
        sa.func.row_number().over(partition_by=base.c.key, order_by=base.c.tokens).label("tokens_rank"),
        sa.func.count().over(partition_by=base.c.key).label("n"),
    ).subquery()

    def nearest_rank(value: sa.ColumnElement[int], rank: sa.ColumnElement[int], p: float) -> Any:
        return sa.func.min(sa.case((rank >= p * ranked.c.n, value)))

    rows = session.execute(
        sa.select(
            ranked.c.key,
            nearest_rank(ranked.c.turns, ranked.c.turns_rank, 0.5),
            nearest_rank(ranked.c.turns, ranked.c.turns_rank, 0.9),
            nearest_rank(ranked.c.tokens, ranked.c.tokens_rank, 0.5),
            nearest_rank(ranked.c.tokens, ranked.c.tokens_rank, 0.9),
        ).group_by(ranked.c.key)
    )
    return {key: (t50, t90, k50, k90) for key, t50, t90, k50, k90 in rows}


def _empty(key: str) -> GroupStats:
    return GroupStats(key, 0, 0, 0, 0, 0, None, None, None, None)
