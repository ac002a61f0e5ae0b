"""``forager view --export DIR``: the viewer's pages of a selection of episodes as a static HTML site.

The site is a folder to share (zip it, serve it with any web server, or open ``index.html`` from disk):
the dashboard of the selection, the list of its episodes (100 per page), each episode's trajectory, and
the pages of their tasks and images, linked with relative addresses. Episodes are read and written one
at a time, so memory does not grow with the selection; what is kept is a count per task and image. The
folder is written under a temporary name and renamed when complete (see ``forager.exports.output``).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment

from core.progress import Progress, ProgressEvent, no_progress
from forager.exports.output import os_errors, staged
from forager.viewer import pages, trace_pages
from forager.viewer.params import EpisodeQuery
from forager.viewer.render import Links, environment, static_dir
from storage import Episode, EpisodeFilter, Image, Store
from storage import viewer_queries as vq
from storage.models import Trace
from storage.traces import TraceFilter
from storage.viewer_queries import TaskRow

#: The pages at the site's top and those one folder down (episodes/, tasks/, images/).
TOP = Links(static_site=True, root="")
NESTED = Links(static_site=True, root="../")
#: Tasks read per query for the task listing.
_BATCH = 500


@dataclass
class ExportReport:
    """What an export wrote."""

    path: Path
    episodes: int = 0
    tasks: int = 0
    images: int = 0
    traces: int = 0
    files: int = 0
    seconds: float = 0.0


def export_site(
    store: Store,
    directory: Path,
    selection: EpisodeFilter | None = None,
    progress: Progress = no_progress,
    traces: TraceFilter | None = None,
) -> ExportReport:
    """Write the static site of the episodes ``selection`` picks (all when None) to ``directory``, a new
    or empty folder, with the traces ``traces`` picks (none when None). Raises ``ExportError`` if the
    folder cannot be written; nothing is left under its name then."""
    started = time.monotonic()
    selection = selection or EpisodeFilter()
    report = ExportReport(Path(directory))
    total = store.count_episodes(selection)
    with staged(report.path, directory=True) as root:
        site = _Site(root, environment(), report, total)
        shutil.copytree(static_dir(), root / "static")
        for sub in ("episodes", "tasks", "images") + (("traces",) if traces is not None else ()):
            (root / sub).mkdir()
        page: list[Episode] = []
        episodes: Counter[int] = Counter()
        resolved: Counter[int] = Counter()
        for episode in store.iter_episodes(selection, with_steps=True):
            site.write(f"episodes/{_name(episode.id)}", NESTED, pages.episode_page(episode, []))
            episode.steps = []  # the listing needs no steps: let them go
            episodes[episode.task_id] += 1
            resolved[episode.task_id] += bool(episode.resolved)
            if len(page) == pages.PAGE_SIZE:
                site.listing(page, more=True)
                page = []
            page.append(episode)
            report.episodes += 1
            progress(ProgressEvent("export", "episodes", completed=report.episodes, total=total))
        site.listing(page, more=False)
        _tasks_and_images(store, site, selection, episodes, resolved)
        _traces(store, site, traces, progress)
        site.write("index.html", TOP, pages.dashboard_page(store, TOP, EpisodeQuery(selection)))
        report.seconds = time.monotonic() - started
    return report


def _tasks_and_images(
    store: Store, site: _Site, selection: EpisodeFilter, episodes: Counter[int], resolved: Counter[int]
) -> None:
    """The page of every task of the selection (with its selected episodes) and of every image they use,
    and the two listings. Memory: one small row per task."""
    rows: list[TaskRow] = []
    task_ids = sorted(episodes, reverse=True)
    for start in range(0, len(task_ids), _BATCH):
        chunk = task_ids[start : start + _BATCH]
        for row in vq.task_page(store, ids=chunk, limit=len(chunk)):
            rows.append(TaskRow(row.task, episodes[row.task.id], resolved[row.task.id]))
    per_image: dict[int, list[TaskRow]] = {}
    for row in rows:
        per_image.setdefault(row.task.image_id, []).append(row)
        full = store.get_task(row.task.id)  # with its statement and patches, which the listing left out
        runs = vq.episode_page(store, dataclasses.replace(selection, task_id=row.task.id), limit=200)
        if full is not None:
            site.write(f"tasks/{_name(str(full.id))}", NESTED, pages.task_page(full, runs))
            site.report.tasks += 1
    images: list[tuple[Image, int]] = []
    for image_id in sorted(per_image, reverse=True):
        image = store.get_image(image_id)
        if image is not None:
            site.write(f"images/{image_id}", NESTED, pages.image_page(image, per_image[image_id]))
            images.append((image, len(per_image[image_id])))
            site.report.images += 1
            site.images.add(image_id)
    listing = {"given": {}, "choices": None, "next": None, "first": None, "kinds": [], "statuses": []}
    site.write("tasks.html", TOP, pages.Page("tasks.html", {**listing, "rows": rows}))
    site.write("images.html", TOP, pages.Page("images.html", {**listing, "rows": images}))


def _traces(store: Store, site: _Site, selection: TraceFilter | None, progress: Progress) -> None:
    """Each selected trace's page (read one at a time) and the listing, 100 a page; an empty listing
    when none is selected (the navigation links to it)."""
    page: list[Trace] = []
    number = 0

    def listing(more: bool) -> None:
        nonlocal number
        number += 1
        context = {
            "given": {},
            "kinds": [],
            "rows": page,
            "counts": None,
            "next": _listing_name(number + 1, "traces") if more else None,
            "previous": _listing_name(number - 1, "traces") if number > 2 else None,
            "first": _listing_name(1, "traces") if number > 1 else None,
        }
        site.write(_listing_name(number, "traces"), TOP, pages.Page("traces.html", context))

    for trace in store.iter_traces(selection) if selection is not None else ():
        site.write(f"traces/{trace.id}", NESTED, trace_pages.trace_page(trace))
        if trace.image_id not in site.images:  # the trace links to its image: a page without tasks
            image = store.get_image(trace.image_id)
            if image is not None:
                site.write(f"images/{trace.image_id}", NESTED, pages.image_page(image, []))
                site.images.add(trace.image_id)
                site.report.images += 1
        trace.data = None  # the listing needs no frames: let them go
        if len(page) == pages.PAGE_SIZE:
            listing(more=True)
            page = []
        page.append(trace)
        site.report.traces += 1
        progress(ProgressEvent("export", "traces", completed=site.report.traces))
    listing(more=False)


@dataclass
class _Site:
    root: Path
    env: Environment
    report: ExportReport
    total: int
    pages_written: int = 0
    images: set[int] = field(default_factory=set)
    """The images whose page is written."""

    def write(self, name: str, links: Links, page: pages.Page) -> None:
        html = self.env.get_template(page.template).render(links=links, **page.context)
        path = self.root / (name if name.endswith(".html") else f"{name}.html")
        with os_errors(path):
            path.write_text(html, encoding="utf-8")
        self.report.files += 1

    def listing(self, rows: list[Episode], *, more: bool) -> None:
        """One page of the episode list: ``episodes.html``, then ``episodes-2.html`` ..."""
        self.pages_written += 1
        number = self.pages_written
        context = {
            "request": EpisodeQuery(EpisodeFilter()),
            "choices": None,
            "rows": rows,
            "hits": None,
            "scanned": 0,
            "total": self.total,
            "next": _listing_name(number + 1) if more else None,
            "previous": _listing_name(number - 1) if number > 2 else None,
            "first": _listing_name(1) if number > 1 else None,
            "sorts": [],
        }
        self.write(_listing_name(number), TOP, pages.Page("episodes.html", context))


def _listing_name(number: int, name: str = "episodes") -> str:
    return f"{name}.html" if number == 1 else f"{name}-{number}.html"


def _name(key: str) -> str:
    """A record's file name, as ``Links`` addresses it."""
    return quote(key, safe="")
