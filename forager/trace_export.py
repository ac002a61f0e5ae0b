"""Stored execution traces out, as JSON lines: CWM's token strings or structured frames.

``cwm``: one ``{"id", "image", "repository", "entry", "text"}`` per trace, ``text`` the whole trace in
CWM's tokens (see ``envs.trace_format``). ``jsonl``: the same fields but ``text``, plus the source
``context`` and the ``frames`` as objects, their locals complete (every ``".."`` resolved).

With a near-duplicate filter (``forager.dedup``, the one trajectory exports use), a trace is left out
when its frames are near-duplicates of a kept trace of the same entry function in the same image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from envs import trace_format
from storage import Store
from storage.models import Trace
from storage.traces import TraceFilter

if TYPE_CHECKING:  # numpy: imported only when traces are deduplicated
    from forager.dedup import NearDuplicateFilter


class TraceFormat(StrEnum):
    CWM = "cwm"
    JSONL = "jsonl"


@dataclass(frozen=True)
class TraceExportSummary:
    written: int
    near_duplicates: int
    path: Path


def export_traces(
    store: Store,
    out: Path,
    format: TraceFormat | str,
    selection: TraceFilter | None = None,
    *,
    dedup: NearDuplicateFilter | None = None,
    progress: Progress = no_progress,
) -> TraceExportSummary:
    """Write the selected kept traces to ``out`` (written whole or not at all: through a partial file)."""
    format = TraceFormat(format)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".part")
        written = duplicates = 0
        with partial.open("w", encoding="utf-8") as file:
            for trace in store.iter_traces(selection):
                if trace.data is None:
                    continue
                if dedup is not None and not _keep(dedup, trace):
                    duplicates += 1
                    continue
                file.write(json.dumps(record(trace, format), ensure_ascii=False) + "\n")
                written += 1
                if written % 500 == 0:
                    progress(ProgressEvent("traces", "export", f"{written} written", written))
        partial.replace(out)
    except OSError as exc:
        raise ForagerError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return TraceExportSummary(written, duplicates, out)


def record(trace: Trace, format: TraceFormat | str) -> dict[str, Any]:
    """One exported line."""
    assert trace.data is not None
    base: dict[str, Any] = {
        "id": trace.id,
        "image": trace.image.tag,
        "repository": trace.image.repository.name,
        "entry": {
            "kind": str(trace.kind), "test": trace.test, "path": trace.path,
            "qualname": trace.qualname, "line": trace.line,
        },
    }  # fmt: skip
    if TraceFormat(format) is TraceFormat.CWM:
        return {**base, "text": trace_format.cwm_text(trace.data, trace.context)}
    return {
        **base,
        "context": trace.context,
        "frames": list(trace_format.resolved_frames(trace.data)),
        "n_frames": trace.n_frames,
        "truncated_values": trace.truncated_values,
        "unrepresentable_values": trace.unrepresentable_values,
        "stepped_over_calls": trace.data.get("stepped_over", 0),
        "deterministic": trace.deterministic,
    }


def _keep(dedup: NearDuplicateFilter, trace: Trace) -> bool:
    """Each frame, as CWM writes it, is one action: a trace of the same lines with other values is not a
    near-duplicate."""
    assert trace.data is not None
    frames = [trace_format.cwm_frame(trace.data, frame) for frame in trace.data["frames"]]
    group = f"{trace.image_id}|{trace.path}::{trace.qualname}"
    return dedup.keep(group, trace.image.repository.name, frames)
