"""``swebench-predictions``: what the official SWE-bench harness evaluates, one prediction per line.

Each line is ``{"instance_id", "model_name_or_path", "model_patch"}``, the JSONL that
``swebench.harness.run_evaluation --predictions_path`` reads. The harness keys predictions by
``instance_id``, so the file holds one prediction per instance: the first selected episode of each
(the others are counted as skipped; choose which with ``--model``, ``--resolved-only`` ...).
"""

from __future__ import annotations

from pathlib import Path

from forager.exports.driver import ExportSummary
from forager.exports.output import JsonLinesWriter
from forager.exports.records import EpisodeRecord


class PredictionsWriter(JsonLinesWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._seen: set[str] = set()

    def write(self, rec: EpisodeRecord) -> bool:
        if rec.instance_id in self._seen:
            return False
        self._seen.add(rec.instance_id)
        self.line(
            {"instance_id": rec.instance_id, "model_name_or_path": rec.model, "model_patch": rec.model_patch}
        )
        return True

    def close(self, summary: ExportSummary) -> None:
        super().close(summary)
        if summary.skipped_by_writer:
            summary.notes.append(
                f"{summary.skipped_by_writer} episode(s) of an instance already predicted were skipped: "
                "SWE-bench takes one prediction per instance"
            )
