"""The one streaming export loop: select episodes, hand each to a format's writer, count what happened.

Episodes come from any iterable (``Store.iter_episodes`` in practice) and are written one at a time,
so memory does not grow with the store: what the loop keeps is a counter per task (for
``max_per_task``), the dedup signatures of kept trajectories (``--dedup``), and the figures of the
summary. The writer writes under a temporary name, renamed to the target only when the whole export
succeeded (see :mod:`forager.exports.output`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from core.progress import Progress, ProgressEvent, no_progress
from forager.exports.output import ExportError, os_errors, staged
from forager.exports.records import EpisodeRecord, record
from storage import Episode

if TYPE_CHECKING:  # datasketch (numpy, scipy) is imported only when an export deduplicates
    from forager.dedup import DedupReport, NearDuplicateFilter


@dataclass
class Tally:
    episodes: int = 0
    resolved: int = 0

    def add(self, resolved: bool | None) -> None:
        self.episodes += 1
        self.resolved += bool(resolved)

    @property
    def resolve_rate(self) -> float:
        return self.resolved / self.episodes if self.episodes else 0.0


@dataclass
class ExportSummary:
    """What an export read, skipped and wrote."""

    format: str
    path: Path
    read: int = 0
    written: int = 0
    skipped_unresolved: int = 0
    skipped_max_per_task: int = 0
    skipped_by_writer: int = 0
    """Episodes the format has no place for (a second prediction of an instance, an sft episode without
    a turn)."""
    dropped_duplicates: int = 0
    rows: int = 0
    """Rows the sft and parquet formats wrote: one per episode, more with ``per_request``."""
    per_request: bool = False
    seconds: float = 0.0
    bytes: int = 0
    files: int = 0
    per_repository: dict[str, Tally] = field(default_factory=dict)
    per_operator: dict[str, Tally] = field(default_factory=dict)
    models: Counter[str] = field(default_factory=Counter)
    configs: Counter[str] = field(default_factory=Counter)
    """The distinct generation configs (JSON) of the written episodes, with their counts."""
    dedup: DedupReport | None = None
    notes: list[str] = field(default_factory=list)

    def count(self, rec: EpisodeRecord) -> None:
        self.written += 1
        self.per_repository.setdefault(rec.repository, Tally()).add(rec.resolved)
        operator = rec.operator or f"({rec.task_kind})"
        self.per_operator.setdefault(operator, Tally()).add(rec.resolved)
        self.models[rec.model] += 1
        self.configs[rec.config_json] += 1

    @property
    def resolved(self) -> int:
        return sum(t.resolved for t in self.per_repository.values())

    def to_json(self) -> dict[str, Any]:
        def tallies(table: dict[str, Tally]) -> dict[str, Any]:
            return {
                name: {
                    "episodes": t.episodes,
                    "resolved": t.resolved,
                    "resolve_rate": round(t.resolve_rate, 4),
                }
                for name, t in sorted(table.items())
            }

        return {
            "format": self.format,
            "path": str(self.path),
            "read": self.read,
            "written": self.written,
            "resolved": self.resolved,
            "skipped_unresolved": self.skipped_unresolved,
            "skipped_max_per_task": self.skipped_max_per_task,
            "skipped_by_writer": self.skipped_by_writer,
            "dropped_duplicates": self.dropped_duplicates,
            "rows": self.rows,
            "per_request": self.per_request,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "per_repository": tallies(self.per_repository),
            "per_operator": tallies(self.per_operator),
            "models": dict(self.models),
            "dedup": self.dedup.to_json() if self.dedup else None,
            "notes": self.notes,
        }


class Writer(Protocol):
    """One export format. Constructed on the temporary path; ``write`` returns False for an episode the
    format has no place for; ``close`` finishes the output (the summary is complete by then)."""

    directory: ClassVar[bool]
    """Whether the output is a folder (else one file)."""

    def write(self, rec: EpisodeRecord) -> bool: ...

    def close(self, summary: ExportSummary) -> None: ...


def export(
    episodes: Iterable[Episode],
    writer_class: type[Writer],
    path: str | Path,
    *,
    format_name: str,
    resolved_only: bool = False,
    max_per_task: int | None = None,
    dedup: NearDuplicateFilter | None = None,
    per_request: bool = False,
    tasks_together: bool = False,
    total: int | None = None,
    progress: Progress = no_progress,
    **writer_options: Any,
) -> ExportSummary:
    """Write the selected ``episodes`` with ``writer_class`` to ``path``; what was done.

    Episodes are taken in order: an unresolved one is skipped under ``resolved_only``; one whose task
    already has ``max_per_task`` written episodes is skipped; one that ``dedup`` finds a near-duplicate
    of an earlier kept one of its task is dropped. ``per_request`` (sft, parquet): an episode whose
    context was shortened is written as several rows, each exactly what its requests sent (see
    :mod:`forager.exports.sft`). ``tasks_together``: the episodes of each task come together (as
    ``Store.iter_episodes(by_task=True)`` reads them), so ``dedup`` forgets a task once its episodes have
    passed and its memory stays that of one task. ``total`` (the number of episodes, when known) sizes
    the progress reports.

    Raises:
        ExportError: the path cannot be written, or no episode was selected (nothing is left under its
            name either way).
    """
    if max_per_task is not None and max_per_task < 1:
        raise ExportError(f"--max-per-task must be at least 1, not {max_per_task}")
    if per_request and not getattr(writer_class, "per_request", False):
        raise ExportError(f"--per-request applies to the sft and parquet formats, not to {format_name}")
    path = Path(path)
    summary = ExportSummary(
        format=format_name, path=path, dedup=dedup.report if dedup else None, per_request=per_request
    )
    per_task: Counter[int] = Counter()
    started = time.perf_counter()
    subject = f"export {format_name}"
    progress(ProgressEvent(subject, "export", "starting", completed=0, total=total))
    with staged(path, directory=writer_class.directory) as temporary:
        writer = writer_class(temporary, **writer_options)
        previous_task = None
        for episode in episodes:
            summary.read += 1
            if tasks_together and dedup is not None and episode.task_id != previous_task:
                if previous_task is not None:
                    dedup.forget(str(previous_task))
                previous_task = episode.task_id
            _consider(episode, writer, summary, per_task, resolved_only, max_per_task, dedup)
            if summary.read % 100 == 0:
                progress(_event(subject, summary, total))
        writer.close(summary)
        if not summary.written:
            raise ExportError(
                f"no episode to export ({summary.read} read, all skipped): nothing was written to {path}; "
                "check the filters (`forager episode list` shows what they select)"
            )
        summary.files, summary.bytes = _size(temporary)
    summary.seconds = time.perf_counter() - started
    progress(_event(subject, summary, total))
    return summary


def _consider(
    episode: Episode,
    writer: Writer,
    summary: ExportSummary,
    per_task: Counter[int],
    resolved_only: bool,
    max_per_task: int | None,
    dedup: NearDuplicateFilter | None,
) -> None:
    if resolved_only and not episode.resolved:
        summary.skipped_unresolved += 1
        return
    if max_per_task is not None and per_task[episode.task_id] >= max_per_task:
        summary.skipped_max_per_task += 1
        return
    rec = record(episode, per_request=summary.per_request)
    if dedup is not None and not dedup.keep(str(rec.task_id), rec.repository, rec.actions):
        summary.dropped_duplicates += 1
        return
    try:
        written = writer.write(rec)
    except (TypeError, ValueError) as exc:  # a value the format cannot hold: name the episode
        raise ExportError(
            f"episode {rec.trajectory_id} cannot be written as {summary.format}: {exc}"
        ) from exc
    if not written:
        summary.skipped_by_writer += 1
        return
    per_task[episode.task_id] += 1
    summary.count(rec)


def _event(subject: str, summary: ExportSummary, total: int | None) -> ProgressEvent:
    return ProgressEvent(
        subject,
        "export",
        f"{summary.written} written of {summary.read} read",
        completed=summary.read,
        total=total,
    )


def _size(path: Path) -> tuple[int, int]:
    with os_errors(path):
        if path.is_file():
            return 1, path.stat().st_size
        files = [p for p in path.rglob("*") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)
