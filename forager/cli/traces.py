"""``forager traces``: execution traces from the images' tests — make, list, show, export."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from core.errors import ForagerError
from envs import trace_format
from envs.traces import ImageReport, TraceOptions, make_traces
from forager.cli.output import (
    BackendOption,
    JsonOption,
    console,
    errors,
    find_image,
    image_dir,
    open_backend,
    open_store,
    print_json,
    progress_display,
)
from forager.trace_export import TraceFormat, export_traces
from storage import ImageStatus
from storage.models import TraceKind, TraceStatus
from storage.traces import TraceFilter

app = typer.Typer(
    help="Execution traces (CWM's format) of the images' tests and the functions they call.",
    no_args_is_help=True,
)

KINDS = ", ".join(kind.value for kind in TraceKind)


@app.command()
def make(
    ctx: typer.Context,
    images: Annotated[
        list[str] | None,
        typer.Argument(metavar="IMAGE...", help="Image ids or tags. Default: every ready image."),
    ] = None,
    max_per_image: Annotated[int, typer.Option(min=1, help="Entry points traced per image at most.")] = 100,
    kinds: Annotated[str, typer.Option(help=f"Comma-separated entry point kinds: {KINDS}.")] = KINDS,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed picks the same entry points.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Environments tracing an image at once.")] = 2,
    max_frames: Annotated[int, typer.Option(min=1, help="Frames a trace may have; longer ones drop.")] = 2000,
    max_seconds: Annotated[
        float, typer.Option(min=0.1, help="Seconds a trace may take; longer drop.")
    ] = 10.0,
    max_calls: Annotated[
        int,
        typer.Option(
            min=0, help="Calls of one function a trace steps into; later ones are stepped over. 0: all."
        ),
    ] = 5,
    check_determinism: Annotated[
        bool, typer.Option(help="Record each trace twice and drop those that differ.")
    ] = True,
    backend: BackendOption = "docker",
    json: JsonOption = False,
) -> None:
    """Trace entry points of each image: its passing tests and the repository functions they call.

    Resumable: entry points already stored (kept or dropped) are not traced again. An image that
    cannot be traced is reported and skipped; the exit code is 1 when none could.
    """
    chosen = tuple(kind.strip() for kind in kinds.split(",") if kind.strip())
    if unknown := sorted(set(chosen) - {kind.value for kind in TraceKind}):
        raise typer.BadParameter(f"unknown {unknown}: choose from {KINDS}", param_hint="--kinds")
    options = TraceOptions(
        max_per_image=max_per_image, kinds=chosen, seed=seed, workers=workers, max_frames=max_frames,
        max_seconds=max_seconds, max_calls=max_calls, check_determinism=check_determinism,
    )  # fmt: skip
    store = open_store(ctx)
    targets = [find_image(store, ref) for ref in images] if images else store.list_images(ImageStatus.READY)
    if not targets:
        raise ForagerError("no ready image to trace: build one with `forager images build SOURCE`")
    where = open_backend(backend, store)
    reports: list[ImageReport] = []
    with progress_display(transient=False) as progress:
        for image in targets:
            try:
                reports.append(
                    make_traces(
                        where, store, image, options, cache_dir=image_dir(ctx, image), progress=progress
                    )
                )
            except ForagerError as exc:
                reports.append(ImageReport(image.tag, error=str(exc)))
    if json:
        print_json([_report_json(report) for report in reports])
    else:
        _print_reports(reports)
    if not any(not report.error for report in reports):
        raise typer.Exit(1)


def _report_json(report: ImageReport) -> dict[str, object]:
    return {
        "image": report.image, "entries": report.entries, "resumed": report.resumed, "kept": report.kept,
        "dropped": dict(report.dropped),
        "median_frames": statistics.median(report.frames) if report.frames else None,
        "seconds": round(report.seconds, 1), "error": report.error or None,
    }  # fmt: skip


def _print_reports(reports: list[ImageReport]) -> None:
    table = Table("image", "entry points", "resumed", "kept", "dropped", "median frames", "seconds", box=None)
    for report in reports:
        if report.error:
            errors.print(f"{escape(report.image)}: skipped: {escape(report.error)}", highlight=False)
            continue
        dropped = ", ".join(f"{reason} {n}" for reason, n in report.dropped.most_common()) or "0"
        table.add_row(
            escape(report.image), str(report.entries), str(report.resumed), str(report.kept), dropped,
            f"{statistics.median(report.frames):.0f}" if report.frames else "-", f"{report.seconds:.0f}",
        )  # fmt: skip
    if table.rows:
        console.print(table)


@app.command("list")
def list_(
    ctx: typer.Context,
    image: Annotated[str | None, typer.Option(help="Only traces of this image (id or tag).")] = None,
    status: Annotated[str, typer.Option(help="ok, dropped or all.")] = "ok",
    kind: Annotated[str | None, typer.Option(help=f"Only entry points of this kind: {KINDS}.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows at most.")] = 50,
    json: JsonOption = False,
) -> None:
    """Stored traces, oldest first, with the counts kept and dropped (by reason)."""
    store = open_store(ctx)
    image_id = find_image(store, image).id if image else None
    selection = TraceFilter(image_id=image_id, status=_status(status), kind=kind)
    traces = store.list_traces(selection, limit=limit)
    counts = store.trace_counts(image_id)
    if json:
        rows = [
            {"id": t.id, "image_id": t.image_id, "kind": t.kind, "test": t.test, "path": t.path,
             "qualname": t.qualname, "line": t.line, "status": t.status, "drop_reason": t.drop_reason or None,
             "frames": t.n_frames, "deterministic": t.deterministic}
            for t in traces
        ]  # fmt: skip
        print_json({"traces": rows, "counts": counts})
        return
    table = Table("id", "image", "kind", "entry", "test", "frames", "status", box=None)
    for t in traces:
        status_text = t.status.value + (f" ({t.drop_reason})" if t.drop_reason else "")
        table.add_row(
            str(t.id), str(t.image_id), t.kind.value, escape(f"{t.path}:{t.line} {t.qualname}"),
            escape(t.test), str(t.n_frames), status_text,
        )  # fmt: skip
    console.print(table)
    dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(counts["dropped"].items())) or "none"
    console.print(f"{counts['ok']} kept; dropped: {dropped}", highlight=False)


def _status(status: str) -> TraceStatus | None:
    if status == "all":
        return None
    try:
        return TraceStatus(status)
    except ValueError:
        raise typer.BadParameter("choose ok, dropped or all", param_hint="--status") from None


@app.command()
def show(
    ctx: typer.Context,
    trace_id: Annotated[int, typer.Argument(metavar="ID")],
    cwm: Annotated[bool, typer.Option("--cwm", help="Print the trace in CWM's tokens instead.")] = False,
) -> None:
    """One trace: its source context, then each frame with the values that changed."""
    trace = open_store(ctx).get_trace(trace_id)
    if trace is None:
        raise ForagerError(f"no trace {trace_id}: see `forager traces list`")
    if trace.data is None:
        raise ForagerError(f"trace {trace_id} was dropped ({trace.drop_reason}): it has no frames")
    if cwm and trace.drop_reason:
        raise ForagerError(f"trace {trace_id} was dropped ({trace.drop_reason}): it is no training text")
    if cwm:
        console.print(trace_format.cwm_text(trace.data, trace.context), markup=False, highlight=False)
        return
    console.print(
        f"[bold]{escape(trace.image.tag)}[/] {escape(trace.path)}:{trace.line} {escape(trace.qualname)} "
        f"({trace.kind.value}, test {escape(trace.test)}), {trace.n_frames} frames"
        + (f", {stepped} calls stepped over" if (stepped := trace.data.get("stepped_over")) else "")
    )
    console.print(Syntax(trace.context, "python", line_numbers=False))
    console.print(trace_format.listing(trace.data), markup=False, highlight=False)
    if trace.drop_reason:
        reason = f"dropped ({trace.drop_reason}): {trace_format.divergence(trace.data)}"
        console.print(reason, markup=False, highlight=False, soft_wrap=True)


@app.command()
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(metavar="OUT.jsonl", help="The file to write.")],
    format: Annotated[TraceFormat, typer.Option("--format", help="cwm: token strings; jsonl: frames.")] = (
        TraceFormat.CWM
    ),
    image: Annotated[str | None, typer.Option(help="Only traces of this image (id or tag).")] = None,
    repository: Annotated[str | None, typer.Option(help="Only traces of this repository.")] = None,
    kind: Annotated[str | None, typer.Option(help=f"Only entry points of this kind: {KINDS}.")] = None,
    min_frames: Annotated[int | None, typer.Option(min=1, help="Only traces with this many frames.")] = None,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Only traces with at most this many.")] = None,
    dedup: Annotated[
        bool, typer.Option("--dedup", help="Drop near-duplicate traces of an entry function (MinHash).")
    ] = False,
    dedup_threshold: Annotated[float, typer.Option(help="Jaccard similarity that makes a duplicate.")] = 0.5,
    json: JsonOption = False,
) -> None:
    """Write kept traces as JSON lines: CWM's token strings, or structured frames."""
    store = open_store(ctx)
    selection = TraceFilter(
        image_id=find_image(store, image).id if image else None, repository=repository, kind=kind,
        min_frames=min_frames, max_frames=max_frames,
    )  # fmt: skip
    from forager.dedup import NearDuplicateFilter  # numpy: only when asked for

    near_duplicates = NearDuplicateFilter(dedup_threshold) if dedup else None
    summary = export_traces(store, out, format, selection, dedup=near_duplicates)
    if json:
        print_json({"written": summary.written, "near_duplicates": summary.near_duplicates, "path": out})
    else:
        extra = f" ({summary.near_duplicates} near-duplicates left out)" if dedup else ""
        console.print(f"{summary.written} traces written to {escape(str(out))}{extra}", highlight=False)
