"""What every command shares: the settings from the global options, consoles, JSON output, progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress as RichProgress
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent
from envs.backend import Backend, make_backend
from forager.settings import Settings
from storage import Episode, Image, Store, Task

console = Console()
errors = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        envvar="FORAGER_BACKEND",
        metavar="docker|kubernetes",
        help="Where environments run: docker (the local engine) or kubernetes (pods of the cluster the "
        "current kubeconfig, or the in-cluster service account, names).",
    ),
]


def settings(ctx: typer.Context) -> Settings:
    """The global options, as the root callback stored them."""
    return ctx.find_root().obj


def open_store(ctx: typer.Context, *, upgrade: bool = False) -> Store:
    """The store named by ``--db`` (default: SQLite in ``--home``)."""
    return Store(settings(ctx).db_url, upgrade=upgrade)


def open_backend(kind: str, store: Store | None = None) -> Backend:
    """The backend ``--backend`` names (its client connects here: a dead service is one error line).

    A cluster runs the images ``forager images push`` put in a registry: ``store`` says where.
    """
    return make_backend(kind, store=store)


def print_json(data: Any) -> None:
    """Machine-readable output for ``--json``: indented, dates and paths as strings."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def error(message: str) -> None:
    """One clear line on stderr."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def progress_display(transient: bool = True) -> Iterator[Progress]:
    """A rich display with one row per subject (stage, message, elapsed), fed by progress events."""
    with RichProgress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[subject]}"),
        TextColumn("[cyan]{task.fields[stage]}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=transient,
    ) as display:
        rows: dict[str, Any] = {}

        def report(event: ProgressEvent) -> None:
            fields = {"subject": event.subject, "stage": event.stage}
            description = escape(event.message)
            if event.subject not in rows:
                rows[event.subject] = display.add_task(description, total=event.total, **fields)
            else:
                display.update(
                    rows[event.subject],
                    description=description,
                    total=event.total,
                    completed=event.completed or 0,
                    **fields,
                )

        yield report


def find_image(store: Store, ref: str) -> Image:
    """The image with id or tag ``ref``, or a clear error."""
    image = store.get_image(int(ref) if ref.isdigit() else ref)
    if image is None:
        raise ForagerError(f"no image {ref!r} in {store.url}: see `forager images list`")
    return image


def find_task(store: Store, ref: str) -> Task:
    """The task with id or instance id ``ref``, or a clear error."""
    task = store.get_task(int(ref) if ref.isdigit() else ref)
    if task is None:
        raise ForagerError(f"no task {ref!r} in {store.url}: see `forager tasks list`")
    return task


def find_episode(store: Store, episode_id: str) -> Episode:
    """The stored episode ``episode_id``, or a clear error."""
    episode = store.get_episode(episode_id)
    if episode is None:
        raise ForagerError(f"no episode {episode_id!r} in {store.url}")
    return episode


def image_dir(ctx: typer.Context, image: Image) -> Path:
    """Where an image's artifacts live under --home (Dockerfile, recipe, baseline, coverage)."""
    return settings(ctx).home / "images" / image.tag.removeprefix("forager/").replace(":", "/")
