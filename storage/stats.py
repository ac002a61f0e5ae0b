"""``forager db stats``: what the stored episodes amount to, per repository, task origin and model.

Of all episodes, the statistics are read off the rollup that the database keeps up to date on every
insert and delete (``storage.rollup``): a few thousand rows, whatever the number of episodes. A filtered
selection is aggregated in the database from the episodes themselves: per grouping, one histogram of
(exit reason, resolved, turns) and one of tokens, plus the (model, task) pairs for distinct task counts,
each a scan of a narrow covering index (``ix_episodes_summary``) without joins, since episodes carry
copies of their task's repository and origin. Python only adds the histograms up. Both give the same
figures: percentiles are nearest-rank (the median of 1, 2, 3, 4 is 2); tokens are counted exactly below
1,000 and to three significant digits above (rounded down), which keeps their histograms small.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage import rollup
from storage.models import Episode
from storage.queries import EpisodeFilter, conditions

#: The groupings ``stats`` reports, by name: what each groups by (the rollup's dimensions besides ``all``).
GROUPINGS: dict[str, sa.ColumnElement[Any]] = {
    "repository": sa.func.coalesce(Episode.repository, rollup.UNKNOWN_KEY),
    "origin": sa.func.coalesce(Episode.origin, rollup.UNKNOWN_KEY),
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
    groups = _scanned(session, where) if where else _rolled_up(session)

    def ranked(name: str) -> list[GroupStats]:
        return sorted(
            (found.stats(key) for key, found in groups[name].items()), key=lambda g: (-g.episodes, g.key)
        )

    return StoreStats(selection, groups["all"][rollup.ALL_KEY].stats("all"), *map(ranked, GROUPINGS))


def _rolled_up(session: Session) -> dict[str, dict[str, _Group]]:
    """Every episode's groups, from the rollup."""
    groups: dict[str, dict[str, _Group]] = {name: defaultdict(_Group) for name in rollup.DIMENSIONS}
    groups["all"][rollup.ALL_KEY] = _Group()
    for dimension, key, reason, episodes, graded, resolved in rollup.outcomes(session):
        group = groups[dimension][key]
        group.exit_reasons[reason] += episodes
        group.graded += graded
        group.resolved += resolved
    if session.get_bind().dialect.name == "postgresql":
        for dimension, key, measure, episodes, p50, p90 in rollup.percentiles(session):
            groups[dimension][key].percentiles[measure] = (episodes, p50, p90)
    else:
        for dimension, key, measure, histogram in rollup.histograms(session):
            getattr(groups[dimension][key], measure).update(histogram)
    for dimension, key, attempted, solved in rollup.tasks(session):
        groups[dimension][key].n_tasks, groups[dimension][key].n_tasks_resolved = attempted, solved
    return groups


def _scanned(session: Session, where: list[sa.ColumnElement[bool]]) -> dict[str, dict[str, _Group]]:
    """The groups of the episodes ``where`` selects, aggregated from the episodes' covering index."""
    groups: dict[str, dict[str, _Group]] = {name: defaultdict(_Group) for name in GROUPINGS}
    tokens = _rounded(Episode.prompt_tokens + Episode.completion_tokens)
    for name, key in GROUPINGS.items():
        found = groups[name]
        outcomes = sa.select(key, Episode.exit_reason, Episode.resolved, Episode.n_steps, sa.func.count())
        for group, reason, resolved, turns, n in session.execute(
            outcomes.where(*where).group_by(key, Episode.exit_reason, Episode.resolved, Episode.n_steps)
        ):
            found[group].add(reason, resolved, turns, n)
        for group, value, n in session.execute(
            sa.select(key, tokens, sa.func.count()).where(*where).group_by(tokens, key)
        ):
            found[group].tokens[value] += n
    # Every episode has one model: the total adds the models up.
    total = _Group()
    for group in groups["model"].values():
        total.merge(group)
    groups["all"] = {rollup.ALL_KEY: total}
    # Distinct tasks: the (model, task) pairs attempted, with the task's repository and origin.
    solved = sa.func.max(sa.case((Episode.resolved.is_(True), 1), else_=0))
    keys = list(GROUPINGS.values())
    attempted: dict[tuple[str, str], set[int]] = defaultdict(set)
    resolved: dict[tuple[str, str], set[int]] = defaultdict(set)
    for task_id, repository, origin, model, any_resolved in session.execute(
        sa.select(Episode.task_id, *keys, solved).where(*where).group_by(Episode.task_id, *keys)
    ):
        for name, group in (("all", rollup.ALL_KEY), ("repository", repository), ("origin", origin)):
            attempted[name, group].add(task_id)
            if any_resolved:
                resolved[name, group].add(task_id)
        attempted["model", model].add(task_id)
        if any_resolved:
            resolved["model", model].add(task_id)
    for (name, group), ids in attempted.items():
        groups[name][group].n_tasks = len(ids)
        groups[name][group].n_tasks_resolved = len(resolved[name, group])
    return groups


class _Group:
    """Histograms of one group, added up from the database's answers."""

    def __init__(self) -> None:
        self.exit_reasons: Counter[str] = Counter()
        self.turns: Counter[int] = Counter()
        self.tokens: Counter[int] = Counter()
        self.graded = self.resolved = 0
        self.n_tasks = self.n_tasks_resolved = 0
        #: (episodes, p50, p90) per measure, when the database found them instead of the histograms.
        self.percentiles: dict[str, tuple[int, int | None, int | None]] = {}

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

    def stats(self, key: str) -> GroupStats:
        episodes, turns_p50, turns_p90 = self._percentiles("turns")
        _, tokens_p50, tokens_p90 = self._percentiles("tokens")
        reasons = dict(sorted(self.exit_reasons.items(), key=lambda item: (-item[1], item[0])))
        return GroupStats(
            key,
            episodes,
            self.n_tasks,
            self.n_tasks_resolved,
            self.graded,
            self.resolved,
            turns_p50,
            turns_p90,
            tokens_p50,
            tokens_p90,
            exit_reasons=reasons,
        )

    def _percentiles(self, measure: str) -> tuple[int, int | None, int | None]:
        if measure in self.percentiles:
            return self.percentiles[measure]
        histogram: Counter[int] = getattr(self, measure)
        return histogram.total(), _nearest_rank(histogram, 0.5), _nearest_rank(histogram, 0.9)


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
