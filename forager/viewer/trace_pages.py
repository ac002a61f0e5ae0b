"""The viewer's trace pages: the traces list (filters, keyset pages both ways) and one trace step by step.

A trace page shows the source the trace entered, file by file with line numbers, and every frame below
it (event, line, the values that changed, the return value or exception), so it reads without a script.
``viewer.js`` adds the stepping: one frame at a time, its line marked in the source, every local of the
frame resolved (``".."`` replaced by the value it stands for). It reads the frames from a JSON data block
and writes them with ``textContent``: a repr is untrusted text and never becomes markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs import trace_format
from forager.viewer import pages
from forager.viewer.pages import Page
from forager.viewer.params import NotFound, ViewerError, is_id, optional_int
from forager.viewer.render import Links
from storage import Store
from storage.models import Trace, TraceKind, TraceStatus
from storage.traces import TraceFilter

#: The ``status`` choices of the traces list: kept, dropped, or both.
STATUSES = ("ok", "dropped", "all")
#: The ``deterministic`` choices (a dropped trace may not have been recorded twice: neither).
DETERMINISM = {"yes": True, "no": False}


@dataclass(frozen=True)
class SourceLine:
    number: int
    text: str
    entry: bool
    """The entry function's ``def`` line."""


@dataclass(frozen=True)
class SourceFile:
    index: int
    """The file's index in the recording (frames name files by it)."""
    path: str
    blocks: list[list[SourceLine]]


@dataclass(frozen=True)
class FrameView:
    number: int
    event: str
    file: int
    path: str
    line: int
    source: str
    changed: list[tuple[str, str]]
    """Locals whose value is new since the previous frame of the scope (all of them at a call)."""
    unchanged: int
    value: str | None


def traces(store: Store, links: Links, query: Mapping[str, str]) -> Page:
    """Traces newest first, filtered by image, entry point text, kind, status and determinism."""
    given = {key: query.get(key, "").strip() for key in ("image", "entry", "kind", "status", "deterministic")}
    given = {key: value for key, value in given.items() if value}
    status = given.get("status", "ok")
    if status not in STATUSES:
        raise ViewerError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    if given.get("kind") and given["kind"] not in {kind.value for kind in TraceKind}:
        raise ViewerError(f"unknown kind {given['kind']!r}: use test or function")
    if given.get("deterministic") and given["deterministic"] not in DETERMINISM:
        raise ViewerError(f"deterministic={given['deterministic']!r}: use yes or no")
    selection = TraceFilter(
        image_id=optional_int(query, "image"),
        status=None if status == "all" else TraceStatus(status),
        kind=given.get("kind"),
        entry=given.get("entry"),
        deterministic=DETERMINISM.get(given.get("deterministic", "")),
    )
    after, before = optional_int(query, "after"), optional_int(query, "before")
    size = pages.PAGE_SIZE
    if before is not None:
        rows = store.trace_page(selection, before=before, limit=size + 1)
        earlier = len(rows) > size
        rows = rows[1:] if earlier else rows
        later = True
    else:
        rows = store.trace_page(selection, after=after, limit=size + 1)
        later = len(rows) > size
        rows = rows[:size]
        earlier = after is not None
    return Page(
        "traces.html",
        {
            "given": given,
            "kinds": [kind.value for kind in TraceKind],
            "rows": rows,
            "counts": store.trace_counts(selection.image_id),
            "next": links.traces(**given, after=str(rows[-1].id)) if later and rows else None,
            "previous": links.traces(**given, before=str(rows[0].id)) if earlier and rows else None,
            "first": links.traces(**given) if after is not None or before is not None else None,
        },
    )


def trace(store: Store, links: Links, ref: str) -> Page:
    """One trace: its facts, the source it entered, and its frames (stepped through by the script)."""
    found = store.get_trace(int(ref)) if is_id(ref) else None
    if found is None:
        raise NotFound(f"no trace {ref!r} in this store")
    return trace_page(found)


def trace_page(found: Trace) -> Page:
    data = found.data
    return Page(
        "trace.html",
        {
            "trace": found,
            "files": source_files(data) if data else [],
            "frames": frame_views(data) if data else [],
            "steps": steps(data) if data else [],
            "divergence": trace_format.divergence(data) if data and found.drop_reason else None,
        },
    )


def source_files(data: dict[str, Any]) -> list[SourceFile]:
    """The functions the trace entered, by file in the order it reached them, each block numbered."""
    entry = data["blocks"][0] if data["blocks"] else None
    files: list[SourceFile] = []
    for index, path in enumerate(data["files"]):
        blocks = []
        for block in sorted((b for b in data["blocks"] if b[0] == path), key=lambda b: b[1]):
            lines = [
                SourceLine(number, data["source"][path].get(str(number), ""), False)
                for number in range(block[1], block[2] + 1)
            ]
            if block is entry:
                marked = next((n for n, line in enumerate(lines) if _is_def(line.text)), None)
                if marked is not None:
                    lines[marked] = SourceLine(lines[marked].number, lines[marked].text, True)
            blocks.append(lines)
        # A line outside every block (a frame in a module body) is still shown, on its own.
        covered = {line.number for block in blocks for line in block}
        loose = [
            SourceLine(int(number), text, False)
            for number, text in sorted(data["source"][path].items(), key=lambda item: int(item[0]))
            if int(number) not in covered
        ]
        blocks += [[line] for line in loose]
        files.append(SourceFile(index, path, blocks))
    return files


def _is_def(text: str) -> bool:
    return text.lstrip().startswith(("def ", "async def "))


def frame_views(data: dict[str, Any]) -> list[FrameView]:
    views = []
    for number, frame in enumerate(data["frames"]):
        event, index, line, local_values, value = frame
        values = local_values or {}
        views.append(
            FrameView(
                number,
                event,
                index,
                data["files"][index],
                line,
                trace_format.source_line(data, frame),
                [(name, text) for name, text in values.items() if text != trace_format.UNCHANGED],
                sum(1 for text in values.values() if text == trace_format.UNCHANGED),
                value,
            )
        )
    return views


def steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The frames for the stepping script, every local resolved (what the frame's scope holds)."""
    return [
        {
            "event": frame["event"],
            "file": index,
            "line": frame["line"],
            # Pairs, not an object: the JSON filter sorts keys, and locals read in their own order.
            "locals": list((frame["locals"] or {}).items()),
            "changed": [name for name, text in (raw[3] or {}).items() if text != trace_format.UNCHANGED],
            "value": frame["value"],
        }
        for frame, raw, index in zip(
            trace_format.resolved_frames(data), data["frames"], (f[1] for f in data["frames"]), strict=True
        )
    ]
