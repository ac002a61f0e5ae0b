"""Trajectories out: every format trainers and harnesses read, written by one streaming loop.

    from forager.exports import export
    summary = export(store.iter_episodes(EpisodeFilter(resolved=True)), "sft", "out/sft.jsonl")

One module per format (a writer class); :mod:`forager.exports.driver` selects the episodes
(``resolved_only``, ``max_per_task``, near-duplicate filtering) and writes under a temporary name
renamed at the end. Adding a format is one module and one line in :data:`FORMATS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from forager.exports.cwm import CwmWriter
from forager.exports.driver import ExportSummary, Writer
from forager.exports.driver import export as _export
from forager.exports.mini_swe_agent import MiniSweAgentWriter
from forager.exports.output import ExportError
from forager.exports.parquet import ParquetWriter
from forager.exports.sft import SftWriter
from forager.exports.swebench_predictions import PredictionsWriter
from storage import Episode

#: Format name -> writer.
FORMATS: dict[str, type[Writer]] = {
    "sft": SftWriter,
    "parquet": ParquetWriter,
    "cwm": CwmWriter,
    "swebench-predictions": PredictionsWriter,
    "mini-swe-agent": MiniSweAgentWriter,
}


def export(episodes: Iterable[Episode], format: str, path: str | Path, **options: Any) -> ExportSummary:
    """Write ``episodes`` in ``format`` (a key of :data:`FORMATS`) to ``path``; see
    :func:`forager.exports.driver.export` for the options."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    return _export(episodes, FORMATS[format], path, format_name=format, **options)


__all__ = ["FORMATS", "ExportError", "ExportSummary", "export"]
