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
from forager.cli.output import console, errors, find_image, open_store, progress_display
from forager.viewer import export_site, serve
from storage.traces import TraceFilter


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
    traces: Annotated[
        bool, typer.Option("--traces", help="With --export: the kept execution traces' pages too.")
    ] = False,
    trace_image: Annotated[
        str | None, typer.Option(help="With --traces: only the traces of this image (id or tag).")
    ] = None,
) -> None:
    """Browse the store: dashboard, images, tasks, episodes with search, trajectories, comparisons, traces.

    Serves http://127.0.0.1:8080/ until Ctrl-C. Read-only; works on SQLite and PostgreSQL stores. With
    `--export DIR` it writes the pages of the selected episodes as a static site instead.
    """
    selection = episode_filter(model, resolved, exit_reason, repository, kind, operator, since, until)
    store = open_store(ctx)
    try:
        if export is not None:
            with progress_display() as progress:
                chosen = TraceFilter(image_id=find_image(store, trace_image).id if trace_image else None)
                report = export_site(store, export, selection, progress, traces=chosen if traces else None)
            console.print(
                f"wrote {report.episodes:,} episodes, {report.tasks:,} tasks, {report.images:,} images and "
                f"{report.traces:,} traces ({report.files:,} pages) to {report.path} in "
                f"{report.seconds:.1f} s: open "
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
