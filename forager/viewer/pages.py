"""What each page of the viewer shows: a function per page, from the store and the request's query to the
template and its context. The server and the static export both call these; neither knows SQL.

Page functions are synchronous (the store is): the server runs them in a thread.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import zip_longest
from typing import Any

from forager.viewer import charts
from forager.viewer.params import (
    EpisodeQuery,
    NotFound,
    ViewerError,
    episode_query,
    is_id,
    optional_int,
)
from forager.viewer.render import Links, diff, grade_view, step_view
from storage import (
    Episode,
    EpisodeFilter,
    GroupStats,
    Image,
    ImageStatus,
    Store,
    Task,
    TaskKind,
    TaskStatus,
)
from storage import viewer_queries as vq

PAGE_SIZE = 100
#: Groups per chart on the dashboard (the ones with the most episodes).
TOP_GROUPS = 12
#: Task origins that are not operators (``storage.models.ORIGIN``): the operator filter cannot select them.
ORIGINS_WITHOUT_FILTER = ("mined", "imported")
#: The colour of an image status on the dashboard.
BUILD_CSS = {ImageStatus.READY: "bar ok", ImageStatus.FAILED: "bar bad", ImageStatus.BUILDING: "bar muted"}


@dataclass(frozen=True)
class Page:
    template: str
    context: dict[str, Any]


def dashboard(store: Store, links: Links, query: Mapping[str, str]) -> Page:
    """Counts, resolve rates per repository, origin and model, turns and tokens, image builds."""
    return dashboard_page(store, links, episode_query(query))


def dashboard_page(store: Store, links: Links, request: EpisodeQuery) -> Page:
    """The dashboard of the episodes ``request`` selects (image builds: all of them)."""
    selection = request.filter
    stats = store.stats(selection)

    def filtered(param: str, value: str) -> str | None:
        return links.episodes(**request.params(**{param: value}))

    def rates(groups: list[GroupStats], param: str) -> charts.Chart:
        rows = [
            charts.Row(
                group.key,
                group.resolve_rate or 0.0,
                f"{_percent(group.resolve_rate)} of {group.graded:,}",
                f"{group.key}: {group.resolved:,} resolved of {group.graded:,} graded "
                f"({group.episodes:,} episodes, {group.tasks:,} tasks)",
                # An origin is an operator, or ``mined`` / ``imported``, which no filter selects.
                None
                if group.key in ORIGINS_WITHOUT_FILTER and param == "operator"
                else filtered(param, group.key),
            )
            for group in groups[:TOP_GROUPS]
        ]
        return charts.bars(rows)

    def counted(
        items: list[tuple[str, int]], css: Callable[[str], str], param: str | None = None
    ) -> charts.Chart:
        peak = max((n for _, n in items), default=0)
        rows = [
            charts.Row(
                label,
                n / peak,
                f"{n:,}",
                f"{label}: {n:,}",
                filtered(param, label) if param else None,
                css(label),
            )
            for label, n in items[:TOP_GROUPS]
        ]
        return charts.bars(rows)

    outcomes = vq.image_outcomes(store)
    builds: Counter[str] = Counter()
    for status, _, n in outcomes:
        builds[status] += n
    failures = [(failure or "unknown", n) for status, failure, n in outcomes if status == ImageStatus.FAILED]
    return Page(
        "dashboard.html",
        {
            "request": request,
            "computed_at": datetime.now(UTC),
            "choices": _choices(store),
            "counts": store.counts(),
            "stats": stats,
            "charts": {
                "repository": rates(stats.by_repository, "repository"),
                "origin": rates(stats.by_origin, "operator"),
                "model": rates(stats.by_model, "model"),
                "exit": counted(list(stats.total.exit_reasons.items()), lambda _: "bar alt", "exit_reason"),
                "turns": charts.histogram(vq.histogram(store, selection, "turns"), "turns"),
                "tokens": charts.histogram(vq.histogram(store, selection, "tokens"), "tokens"),
                "builds": counted(builds.most_common(), lambda status: BUILD_CSS.get(status, "bar")),
                "failures": counted(failures, lambda _: "bar bad"),
            },
        },
    )


def episodes(store: Store, links: Links, query: Mapping[str, str]) -> Page:
    """The episodes the filters pick, sorted, a page at a time; with ``q``, only those whose steps say it."""
    request = episode_query(query)
    hits, scanned, next_after, total, earlier = None, 0, None, None, False
    try:
        if request.search:
            found = vq.search_page(
                store,
                request.filter,
                request.search,
                sort=request.sort,
                descending=request.descending,
                after=request.after,
                limit=PAGE_SIZE // 2,
            )
            hits, scanned, next_after = found.hits, found.scanned, found.next_after
            rows = [hit.episode for hit in hits]
        elif request.before:
            # The page before: the same order reversed, read onwards from the first row of the page shown.
            rows = vq.episode_page(
                store,
                request.filter,
                sort=request.sort,
                descending=not request.descending,
                after=request.before,
                limit=PAGE_SIZE + 1,
            )
            earlier = len(rows) > PAGE_SIZE
            rows = rows[:PAGE_SIZE][::-1]
            next_after = rows[-1].id if rows else None
            total = store.count_episodes(request.filter)
        else:
            rows = vq.episode_page(
                store,
                request.filter,
                sort=request.sort,
                descending=request.descending,
                after=request.after,
                limit=PAGE_SIZE,
            )
            next_after = rows[-1].id if len(rows) == PAGE_SIZE else None
            earlier = request.after is not None
            total = store.count_episodes(request.filter)
    except LookupError as exc:
        raise ViewerError(f"{exc}: start from the first page") from exc
    paged = request.after or request.before
    return Page(
        "episodes.html",
        {
            "request": request,
            "choices": _choices(store),
            "rows": rows,
            "hits": hits,
            "scanned": scanned,
            "total": total,
            "next": links.episodes(**request.params(after=next_after, before=None)) if next_after else None,
            "previous": links.episodes(**request.params(after=None, before=rows[0].id))
            if earlier and rows and hits is None
            else None,
            "first": links.episodes(**request.params(after=None, before=None)) if paged else None,
            "sorts": list(vq.EPISODE_SORTS),
        },
    )


def episode(store: Store, links: Links, episode_id: str) -> Page:
    """One trajectory: each step, the final patch, the grade, and the other episodes of its task."""
    found = store.get_episode(episode_id)
    if found is None:
        raise NotFound(f"no episode {episode_id!r} in this store")
    siblings = vq.episode_page(store, EpisodeFilter(task_id=found.task_id), limit=50)
    return episode_page(found, [other for other in siblings if other.id != found.id])


def episode_page(found: Episode, siblings: list[Episode]) -> Page:
    """The page of ``found`` (steps loaded); ``siblings`` are offered for a side-by-side comparison."""
    return Page(
        "episode.html",
        {
            "episode": found,
            "steps": [step_view(step) for step in found.steps],
            "patch": diff(found.final_patch),
            "grade": grade_view(found.grade),
            "siblings": siblings,
        },
    )


def compare(store: Store, links: Links, query: Mapping[str, str]) -> Page:
    """Two episodes side by side, step by step."""
    pair = []
    for name in ("a", "b"):
        episode_id = query.get(name, "").strip()
        if not episode_id:
            raise ViewerError("compare needs two episodes: /compare?a=<episode id>&b=<episode id>")
        found = store.get_episode(episode_id)
        if found is None:
            raise NotFound(f"no episode {episode_id!r} in this store")
        pair.append(found)
    a, b = pair
    return Page(
        "compare.html",
        {
            "a": a,
            "b": b,
            "same_task": a.task_id == b.task_id,
            "rows": list(zip_longest(map(step_view, a.steps), map(step_view, b.steps))),
            "patches": (diff(a.final_patch), diff(b.final_patch)),
            "grades": (grade_view(a.grade), grade_view(b.grade)),
        },
    )


def tasks(store: Store, links: Links, query: Mapping[str, str]) -> Page:
    """Tasks newest first, filtered by kind, status, repository, operator or image."""
    given = {key: query.get(key, "").strip() for key in ("kind", "status", "repository", "operator", "image")}
    given = {key: value for key, value in given.items() if value}
    _check_choice("kind", given.get("kind"), TaskKind)
    _check_choice("status", given.get("status"), TaskStatus)
    rows = vq.task_page(
        store,
        kind=given.get("kind"),
        status=given.get("status"),
        repository=given.get("repository"),
        operator=given.get("operator"),
        image_id=optional_int(query, "image"),
        after=optional_int(query, "after"),
        limit=PAGE_SIZE,
    )
    next_after = rows[-1].task.id if len(rows) == PAGE_SIZE else None
    return Page(
        "tasks.html",
        {
            "given": given,
            "choices": _choices(store),
            "kinds": [kind.value for kind in TaskKind],
            "statuses": [status.value for status in TaskStatus],
            "rows": rows,
            "next": links.tasks(**given, after=str(next_after)) if next_after else None,
            "first": links.tasks(**given) if query.get("after") else None,
        },
    )


def task(store: Store, links: Links, ref: str) -> Page:
    """One task: statement, patches, tests, and its episodes (to compare two of them)."""
    found = store.get_task(int(ref) if is_id(ref) else ref)
    if found is None:
        raise NotFound(f"no task {ref!r} in this store")
    return task_page(found, vq.episode_page(store, EpisodeFilter(task_id=found.id), limit=200))


def task_page(found: Task, runs: list[Episode]) -> Page:
    """The page of ``found`` listing the episodes ``runs``."""
    return Page(
        "task.html",
        {
            "task": found,
            "gold": diff(found.gold_patch),
            "test_patch": diff(found.test_patch),
            "setup": diff(found.setup_patch),
            "episodes": runs,
        },
    )


def images(store: Store, links: Links, query: Mapping[str, str]) -> Page:
    """Images newest first: status, failure class, tests, build time, size."""
    status = query.get("status", "").strip() or None
    repository = query.get("repository", "").strip() or None
    _check_choice("status", status, ImageStatus)
    rows = vq.image_page(
        store, status=status, repository=repository, after=optional_int(query, "after"), limit=PAGE_SIZE
    )
    given = {key: value for key, value in (("status", status), ("repository", repository)) if value}
    next_after = rows[-1][0].id if len(rows) == PAGE_SIZE else None
    return Page(
        "images.html",
        {
            "given": given,
            "choices": _choices(store),
            "statuses": [s.value for s in ImageStatus],
            "rows": rows,
            "next": links.images(**given, after=str(next_after)) if next_after else None,
            "first": links.images(**given) if query.get("after") else None,
        },
    )


def image(store: Store, links: Links, ref: str) -> Page:
    """One image: status, failure, recipe, baseline outcomes, flaky tests and the build log's end."""
    found = store.get_image(int(ref)) if is_id(ref) else None
    if found is None:
        raise NotFound(f"no image {ref!r} in this store")
    return image_page(found, vq.task_page(store, image_id=found.id, limit=PAGE_SIZE))


def image_page(found: Image, tasks: list[vq.TaskRow]) -> Page:
    """The page of ``found`` (with its baseline and log) listing the tasks ``tasks``."""
    return Page(
        "image.html",
        {"image": found, "baseline": Counter(found.baseline.values()).most_common(), "tasks": tasks},
    )


#: The filter menus' values per store (by URL), with when they were read: menus may lag a new model or
#: exit reason by ``CHOICES_SECONDS``, and no listing pays for reading them again.
_kept_choices: dict[str, tuple[float, vq.Choices]] = {}
CHOICES_SECONDS = 60.0


def _choices(store: Store) -> vq.Choices:
    kept = _kept_choices.get(store.url)
    if kept is None or time.monotonic() - kept[0] > CHOICES_SECONDS:
        kept = _kept_choices[store.url] = (time.monotonic(), vq.choices(store))
    return kept[1]


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.0%}"


def _check_choice(name: str, value: str | None, enum: Any) -> None:
    if value is not None and value not in {member.value for member in enum}:
        raise ViewerError(f"unknown {name} {value!r}: use one of {', '.join(m.value for m in enum)}")


__all__ = ["Page", "compare", "dashboard", "episode", "episodes", "image", "images", "task", "tasks"]
