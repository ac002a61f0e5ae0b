"""``forager export``: stored episodes out, in the formats trainers and harnesses read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
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
from forager.cli.output import JsonOption, console, errors, open_store, print_json
from forager.exports import FORMATS, ExportSummary, export

if TYPE_CHECKING:
    from forager.dedup import NearDuplicateFilter

Format = StrEnum("Format", {name.replace("-", "_"): name for name in FORMATS})


def export_command(
    ctx: typer.Context,
    format: Annotated[Format, typer.Argument(help="What to write.", show_default=False)],
    out: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="The file to write (sft, cwm, swebench-predictions: JSONL) or the new folder "
            "(parquet, mini-swe-agent). Missing parent folders are created.",
        ),
    ],
    model: ModelFilter = None,
    resolved: ResolvedFilter = None,
    exit_reason: ExitReasonFilter = None,
    repository: RepositoryFilter = None,
    kind: KindFilter = None,
    operator: OperatorFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    task: Annotated[int | None, typer.Option(help="Only episodes of this task id.")] = None,
    resolved_only: Annotated[bool, typer.Option("--resolved-only", help="Only resolved episodes.")] = False,
    max_per_task: Annotated[
        int | None, typer.Option(min=1, help="At most this many episodes per task (the first stored).")
    ] = None,
    dedup: Annotated[
        bool, typer.Option("--dedup", help="Drop near-duplicate trajectories of a task (MinHash).")
    ] = False,
    dedup_threshold: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="Estimated Jaccard similarity that makes a near-duplicate."),
    ] = 0.5,
    per_request: Annotated[
        bool,
        typer.Option(
            "--per-request",
            help="sft, parquet: an episode whose context was shortened becomes several rows, each exactly "
            "what its requests sent (default: one row per episode, its conversation at the end).",
        ),
    ] = False,
    shard_mb: Annotated[int, typer.Option(min=1, help="parquet: size of a shard, in MiB.")] = 256,
    json: JsonOption = False,
) -> None:
    """Export stored episodes: SFT JSONL, parquet with a dataset card, CWM trajectories, SWE-bench
    predictions, or mini-swe-agent trajectories. Streams the store in constant memory; the output
    appears under OUT only once complete."""
    if resolved_only and resolved is False:
        raise ForagerError("--resolved-only and --unresolved select nothing together: drop one")
    selection = episode_filter(
        model,
        True if resolved_only else resolved,
        exit_reason,
        repository,
        kind,
        operator,
        since,
        until,
        task,
    )
    options = {"shard_bytes": shard_mb << 20} if format.value == "parquet" else {}
    store = open_store(ctx)
    try:
        total = store.count_episodes(selection)
        with _progress_bar(total) as progress:
            summary = export(
                # With --dedup, each task's episodes together: the filter forgets a task once it has passed.
                store.iter_episodes(selection, by_task=dedup),
                format.value,
                out,
                resolved_only=resolved_only,
                max_per_task=max_per_task,
                dedup=_dedup_filter(dedup_threshold) if dedup else None,
                per_request=per_request,
                tasks_together=dedup,
                total=total,
                progress=progress,
                **options,
            )
    finally:
        store.close()
    if json:
        print_json(summary.to_json())
    else:
        _print_summary(summary)


def _dedup_filter(threshold: float) -> NearDuplicateFilter:
    from forager.dedup import NearDuplicateFilter  # datasketch (numpy, scipy): only when asked for

    return NearDuplicateFilter(threshold)


@contextmanager
def _progress_bar(total: int) -> Iterator[Progress]:
    """A bar on a terminal's stderr; nothing when stderr is a file or a pipe (logs, CI)."""
    if not errors.is_terminal:
        yield no_progress
        return
    with RichProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    ) as display:
        row = display.add_task("export", total=total)

        def report(event: ProgressEvent) -> None:
            display.update(row, description=event.subject, completed=event.completed or 0)

        yield report


def _print_summary(summary: ExportSummary) -> None:
    skipped = [
        (summary.skipped_unresolved, "unresolved"),
        (summary.skipped_max_per_task, "beyond --max-per-task"),
        (summary.dropped_duplicates, "near-duplicates"),
        (summary.skipped_by_writer, "with no place in the format"),
    ]
    console.print(
        f"{summary.written} of {summary.read} episode(s) written to {summary.path} "
        f"({summary.files} file(s), {summary.bytes / 2**20:.1f} MiB, {summary.seconds:.1f} s); "
        f"{summary.resolved} resolved",
        highlight=False,
    )
    if summary.per_request:
        console.print(f"  {summary.rows} row(s), cut where a context was shortened", highlight=False)
    for count, why in skipped:
        if count:
            console.print(f"  skipped {count} {why}", highlight=False)
    if summary.dedup is not None:
        for name, counts in sorted(summary.dedup.per_repository.items()):
            console.print(f"  dedup {name}: {counts.kept} kept, {counts.dropped} dropped", highlight=False)
    for note in summary.notes:
        console.print(f"  {note}", highlight=False)
