"""``forager view``: browse the store in a web browser, or export a selection as a static HTML site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forager.cli.episode import (
    ExitReasonFilter,
    KindFilter,
    ModelFilter,
    OperatorFilter,
    RepositoryFilter,
    ResolvedFilter,
    SinceFilter,
    UntilFilter,
    episode_filter,
)
from forager.cli.output import console, errors, open_store, progress_display
from forager.viewer import export_site, serve


def view(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FORAGER_VIEW_TOKEN",
            help="Require this secret of every request (open the printed address once; a cookie keeps it).",
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="DIR",
            help="Instead of serving, write the selected episodes' pages to DIR (a new or empty folder) as "
            "a static site.",
        ),
    ] = None,
    model: ModelFilter = None,
    resolved: ResolvedFilter = None,
    exit_reason: ExitReasonFilter = None,
    repository: RepositoryFilter = None,
    kind: KindFilter = None,
    operator: OperatorFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
) -> None:
    """Browse the store: dashboard, images, tasks, episodes with search, trajectories, comparisons.

    Serves http://127.0.0.1:8080/ until Ctrl-C. Read-only; works on SQLite and PostgreSQL stores. With
    `--export DIR` it writes the pages of the selected episodes as a static site instead.
    """
    selection = episode_filter(model, resolved, exit_reason, repository, kind, operator, since, until)
    store = open_store(ctx)
    try:
        if export is not None:
            with progress_display() as progress:
                report = export_site(store, export, selection, progress)
            console.print(
                f"wrote {report.episodes:,} episodes, {report.tasks:,} tasks and {report.images:,} images "
                f"({report.files:,} pages) to {report.path} in {report.seconds:.1f} s: open "
                f"{report.path / 'index.html'}",
                highlight=False,
            )
            return
        if selection.to_json():
            errors.print("note: the filters apply to --export; in the browser, filter on each page")
        address = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
        shown = f"{address}?token={token}" if token else address
        serve(
            store,
            host=host,
            port=port,
            token=token,
            on_ready=lambda: console.print(
                f"forager view of {store.url} at {shown} (Ctrl-C stops)", highlight=False, soft_wrap=True
            ),
        )
    finally:
        store.close()
