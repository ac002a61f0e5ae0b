"""Trajectories out: every format trainers and harnesses read, written by one streaming loop.

    from forager.exports import export
    summary = export(store.iter_episodes(EpisodeFilter(resolved=True)), "sft", "out/sft.jsonl")

One module per format (a writer class); :mod:`forager.exports.driver` selects the episodes
(``resolved_only``, ``max_per_task``, near-duplicate filtering) and writes under a temporary name
renamed at the end. Adding a format is one module and one line in :data:`FORMATS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from pathlib import Path
from typing import Any

from forager.exports.driver import ExportSummary, Writer
from forager.exports.driver import export as _export
from forager.exports.output import ExportError
from storage import Episode

#: Format name -> its writer class, as ``module:Class``: a format's dependencies (pyarrow for parquet)
#: are imported only when it is written.
FORMATS: dict[str, str] = {
    "sft": "forager.exports.sft:SftWriter",
    "parquet": "forager.exports.parquet:ParquetWriter",
    "cwm": "forager.exports.cwm:CwmWriter",
    "swebench-predictions": "forager.exports.swebench_predictions:PredictionsWriter",
    "mini-swe-agent": "forager.exports.mini_swe_agent:MiniSweAgentWriter",
}


def writer(format: str) -> type[Writer]:
    """The writer class of ``format`` (a key of :data:`FORMATS`)."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    module, name = FORMATS[format].split(":")
    return getattr(import_module(module), name)


def export(episodes: Iterable[Episode], format: str, path: str | Path, **options: Any) -> ExportSummary:
    """Write ``episodes`` in ``format`` (a key of :data:`FORMATS`) to ``path``; see
    :func:`forager.exports.driver.export` for the options."""
    return _export(episodes, writer(format), path, format_name=format, **options)


__all__ = ["FORMATS", "ExportError", "ExportSummary", "export", "writer"]
