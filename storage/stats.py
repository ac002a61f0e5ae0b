"""``forager db stats``: what the stored episodes amount to, per repository, task origin and model.

The database aggregates: per grouping, one histogram of (exit reason, resolved, turns) and one of
tokens, plus one list of (task, model) pairs for the distinct task counts. Each is a scan of a narrow
covering index (``ix_episodes_summary``), and each answer has a few rows per group whatever the number
of episodes; Python only adds the histograms up. Percentiles are nearest-rank (the median of 1, 2, 3, 4
is 2); tokens are counted exactly below 1,000 and to three significant digits above (rounded down),
which keeps their histogram small.
"""

from __future__ import annotations

import math
from collections import Counter
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
                f"by_{name}": [group.to_json() for group in getattr(self, f"by_{name}")] for name in GROUPINGS
            },
        }


def compute(session: Session, selection: EpisodeFilter | None) -> StoreStats:
    """The statistics of the episodes ``selection`` picks (all when None)."""
    selection = selection or EpisodeFilter()
    where = conditions(selection)
    groups: dict[str, dict[str, _Group]] = {name: {} for name in GROUPINGS}
    tokens = _rounded(Episode.prompt_tokens + Episode.completion_tokens)
    for name, key in GROUPINGS.items():
        found = groups[name]
        outcomes = sa.select(key, Episode.exit_reason, Episode.resolved, Episode.n_steps, sa.func.count())
        for group, reason, resolved, turns, n in session.execute(
            _joined(key, outcomes)
            .where(*where)
            .group_by(key, Episode.exit_reason, Episode.resolved, Episode.n_steps)
        ):
            if str(group) not in found:
                found[str(group)] = _Group()
            found[str(group)].add(reason, resolved, turns, n)
        for group, value, n in session.execute(
            _joined(key, sa.select(key, tokens, sa.func.count())).where(*where).group_by(tokens, key)
        ):
            found[str(group)].tokens[value] += n
    # Every episode has one model: the total adds the models up.
    total = _Group()
    for group in groups["model"].values():
        total.merge(group)
    # Distinct tasks: the (model, task) pairs, then which repository and origin each task has.
    solved = sa.func.max(sa.case((Episode.resolved.is_(True), 1), else_=0))
    attempts = session.execute(
        sa.select(Episode.model, Episode.task_id, solved)
        .where(*where)
        .group_by(Episode.model, Episode.task_id)
    ).all()
    task_keys = {
        task_id: (repository, origin)
        for task_id, repository, origin in session.execute(
            sa.select(Task.id, Repository.name, ORIGIN)
            .join(Task.image)
            .join(Image.repository)
            .where(Task.id.in_(sa.select(Episode.task_id).where(*where)))
        )
    }
    for model, task_id, resolved in attempts:
        repository, origin = task_keys[task_id]
        total.attempted(task_id, bool(resolved))
        for name, group in (("repository", repository), ("origin", origin), ("model", model)):
            groups[name][str(group)].attempted(task_id, bool(resolved))

    def ranked(name: str) -> list[GroupStats]:
        return sorted(
            (found.stats(key) for key, found in groups[name].items()), key=lambda g: (-g.episodes, g.key)
        )

    return StoreStats(selection, total.stats("all"), *(ranked(name) for name in GROUPINGS))


class _Group:
    """Histograms of one group, added up from the database's answers."""

    def __init__(self) -> None:
        self.exit_reasons: Counter[str] = Counter()
        self.turns: Counter[int] = Counter()
        self.tokens: Counter[int] = Counter()
        self.graded = self.resolved = 0
        self.tasks: set[int] = set()
        self.tasks_resolved: set[int] = set()

    def add(self, reason: str, resolved: bool | None, turns: int, n: int) -> None:
        self.exit_reasons[reason] += n
        self.turns[turns] += n
        self.graded += n if resolved is not None else 0
        self.resolved += n if resolved else 0

    def merge(self, other: _Group) -> None:
        """Add ``other``'s episodes (not its tasks: those are counted apart) to this group's."""
        self.exit_reasons.update(other.exit_reasons)
        self.turns.update(other.turns)
        self.tokens.update(other.tokens)
        self.graded += other.graded
        self.resolved += other.resolved

    def attempted(self, task_id: int, resolved: bool) -> None:
        self.tasks.add(task_id)
        if resolved:
            self.tasks_resolved.add(task_id)

    def stats(self, key: str) -> GroupStats:
        episodes = self.turns.total()
        reasons = dict(sorted(self.exit_reasons.items(), key=lambda item: (-item[1], item[0])))
        return GroupStats(
            key,
            episodes,
            len(self.tasks),
            len(self.tasks_resolved),
            self.graded,
            self.resolved,
            _nearest_rank(self.turns, 0.5),
            _nearest_rank(self.turns, 0.9),
            _nearest_rank(self.tokens, 0.5),
            _nearest_rank(self.tokens, 0.9),
            exit_reasons=reasons,
        )


def _joined(key: sa.ColumnElement[Any], query: sa.Select[Any]) -> sa.Select[Any]:
    """``query`` over episodes, joined to what ``key`` needs (only that: joins cost a lookup a row)."""
    if key is Episode.model:
        return query.select_from(Episode)
    query = query.select_from(Episode).join(Episode.task)
    return query.join(Task.image).join(Image.repository) if key is Repository.name else query


def _rounded(tokens: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """``tokens`` exact below 1,000, else rounded down to three significant digits."""
    steps = [(10**digits, 10 ** (digits - 3)) for digits in range(4, 10)]
    return sa.case(
        (tokens < 1000, tokens),
        *((tokens < limit, tokens // step * step) for limit, step in steps),
        else_=tokens // 10**7 * 10**7,
    )


def _nearest_rank(histogram: Counter[int], p: float) -> int | None:
    """The smallest value with at least ``p`` of the counts at or below it; None for no counts."""
    needed = math.ceil(p * histogram.total())
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= needed:
            return value
    return None
