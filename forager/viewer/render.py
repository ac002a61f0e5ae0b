"""Turning stored records into what the templates show: diffs, actions per tool, observations, grades.

Everything here returns plain data; the templates (Jinja2, autoescaped) write it out, so no stored text
is ever put into HTML unescaped. ``Links`` makes every URL, for the server (``/episodes/<id>``) or for a
static export (``episodes/<id>.html``, relative, so the folder can be opened from disk or moved).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from storage import Step

#: Observations longer than this (lines or characters) are shown collapsed.
LONG_LINES = 25
LONG_CHARS = 3000
#: Edits larger than this are shown as their arguments rather than diffed.
MAX_DIFF_CHARS = 200_000


@dataclass(frozen=True)
class Links:
    """Every URL a page links to. ``root`` is the path back to the site's top ("" on the server's pages,
    ``../`` for an exported page one folder down); ``static_site`` makes file links (``.html``) and drops
    links a static site cannot answer (filtered listings, search, comparison)."""

    static_site: bool = False
    root: str = "/"

    def home(self, **params: str) -> str | None:
        return self._listing("", "index.html", params)

    def episodes(self, **params: str) -> str | None:
        return self._listing("episodes", "episodes.html", params)

    def tasks(self, **params: str) -> str | None:
        return self._listing("tasks", "tasks.html", params)

    def images(self, **params: str) -> str | None:
        return self._listing("images", "images.html", params)

    def traces(self, **params: str) -> str | None:
        return self._listing("traces", "traces.html", params)

    def trace(self, trace_id: int) -> str:
        return self._record("traces", str(trace_id))

    def episode(self, episode_id: str, step: int | None = None) -> str:
        anchor = f"#step-{step}" if step is not None else ""
        return self._record("episodes", episode_id) + anchor

    def task(self, task_id: int) -> str:
        return self._record("tasks", str(task_id))

    def image(self, image_id: int) -> str:
        return self._record("images", str(image_id))

    def compare(self, a: str | None = None, b: str | None = None) -> str | None:
        """Two episodes side by side; without them, the address the comparison form submits to."""
        if self.static_site:
            return None
        pair = {key: value for key, value in (("a", a), ("b", b)) if value is not None}
        return f"{self.root}compare" + (f"?{urlencode(pair)}" if pair else "")

    def static(self, name: str) -> str:
        return f"{self.root}static/{name}"

    def _record(self, kind: str, key: str) -> str:
        return f"{self.root}{kind}/{quote(key, safe='')}" + (".html" if self.static_site else "")

    def _listing(self, path: str, page: str, params: dict[str, str]) -> str | None:
        if self.static_site:
            return None if params else self.root + page
        return self.root + path + (f"?{urlencode(params)}" if params else "")


def environment() -> Environment:
    """The templates, autoescaped everywhere (HTML and the SVG charts inside it), with the helpers."""
    env = Environment(
        loader=PackageLoader("forager.viewer", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        number=number,
        compact=compact,
        seconds=seconds,
        percent=percent,
        moment=moment,
        pretty_json=pretty_json,
        marked=marked,
    )
    return env


def static_dir() -> Path:
    """The folder of the CSS and script the pages load (package data)."""
    return Path(__file__).parent / "static"


# ---- values -------------------------------------------------------------------------------------------


def number(value: int | float | None) -> str:
    """12,345 (with thousands separators); an em dash for None."""
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def compact(value: int | None) -> str:
    """950, 12.3k, 4.5M."""
    if value is None:
        return "—"
    if value < 10_000:
        return f"{value:,}"
    return f"{value / 1000:.1f}k" if value < 1_000_000 else f"{value / 1_000_000:.1f}M"


def marked(text: str, needle: str) -> list[tuple[str, bool]]:
    """``text`` cut into parts, each with whether it is an occurrence of ``needle`` (ignoring case)."""
    if not needle:
        return [(text, False)]
    parts = re.split(f"({re.escape(needle)})", text, flags=re.IGNORECASE)
    return [(part, i % 2 == 1) for i, part in enumerate(parts) if part]


def seconds(value: float | None) -> str:
    """0.42 s, 12.3 s, 4 min 05 s, 2 h 03 min."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def moment(value: datetime | None) -> str:
    """A UTC time to the second, as stored."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


# ---- diffs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffLine:
    kind: str
    """``file`` (headers), ``hunk``, ``add``, ``del``, ``ctx`` (context) or ``note`` (``\\ No newline``)."""
    text: str


@dataclass(frozen=True)
class Diff:
    lines: list[DiffLine]
    files: int
    added: int
    removed: int


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff(patch: str | None) -> Diff:
    """A unified diff (``git diff`` output) line by line, each classified for colouring, with its size.

    Hunk headers give how many old and new lines follow, so a removed line that reads ``-- x`` is told
    from a file header ``--- a/x``; lines outside hunks are file headers (or whatever text surrounds
    the diff).
    """
    lines: list[DiffLine] = []
    files = added = removed = 0
    old_left = new_left = 0
    for text in (patch or "").splitlines():
        if old_left > 0 or new_left > 0:
            if text.startswith("+"):
                kind, added, new_left = "add", added + 1, new_left - 1
            elif text.startswith("-"):
                kind, removed, old_left = "del", removed + 1, old_left - 1
            elif text.startswith("\\"):
                kind = "note"
            else:
                kind, old_left, new_left = "ctx", old_left - 1, new_left - 1
        elif match := _HUNK.match(text):
            kind = "hunk"
            old_left, new_left = (int(n) if n is not None else 1 for n in match.groups())
        elif text.startswith("\\"):
            kind = "note"
        else:
            kind = "file"
            files += text.startswith("+++ ")
        lines.append(DiffLine(kind, text))
    return Diff(lines, files, added, removed)


def edit_diff(path: str, old: str, new: str) -> Diff:
    """What an ``edit`` call changes, as a unified diff of ``old_str`` against ``new_str``."""
    body = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=f"a/{path}", tofile=f"b/{path}", lineterm="", n=3
    )
    return diff("\n".join(body))


# ---- steps --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionView:
    """An action as the step shows it. ``kind`` picks the rendering: ``bash`` (a shell block), ``edit``
    (a diff), ``create`` (a file), ``submit``, ``other`` (a tool this viewer does not know: its
    arguments), or ``malformed`` (the model's raw text that did not parse as a call)."""

    kind: str
    tool: str = ""
    path: str = ""
    text: str = ""
    diff: Diff | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


def action_view(action: dict[str, Any] | str) -> ActionView:
    if not isinstance(action, dict):
        return ActionView("malformed", text=str(action))
    tool = str(action.get("tool", ""))
    arguments = action.get("arguments") or {}
    if not isinstance(arguments, dict):  # stored by something other than Forager's agent
        arguments = {"arguments": arguments}
    text_args = {
        key: value if isinstance(value, str) else pretty_json(value) for key, value in arguments.items()
    }
    if tool == "bash" and set(text_args) == {"command"}:
        return ActionView("bash", tool, text=text_args["command"])
    if tool == "edit" and {"path", "old_str", "new_str"} <= set(text_args) and _diffable(text_args):
        path = text_args["path"]
        return ActionView(
            "edit", tool, path, diff=edit_diff(path, text_args["old_str"], text_args["new_str"])
        )
    if tool == "create" and {"path", "content"} <= set(text_args):
        return ActionView("create", tool, text_args["path"], text=text_args["content"])
    if tool == "submit":
        return ActionView("submit", tool)
    return ActionView("other", tool, arguments=text_args)


def _diffable(arguments: dict[str, str]) -> bool:
    """Whether an edit is small enough to diff quickly (difflib's cost grows faster than the text)."""
    return len(arguments["old_str"]) + len(arguments["new_str"]) <= MAX_DIFF_CHARS


@dataclass(frozen=True)
class StepView:
    index: int
    thought: str
    action: ActionView
    observation: str
    long: bool
    """Whether the observation is shown collapsed."""
    observation_lines: int
    model_seconds: float
    tool_seconds: float
    prompt_tokens: int | None
    completion_tokens: int | None


def step_view(step: Step) -> StepView:
    observation = step.observation or ""
    n_lines = observation.count("\n") + 1 if observation else 0
    return StepView(
        step.index,
        (step.thought or "").strip(),
        action_view(step.action),
        observation,
        n_lines > LONG_LINES or len(observation) > LONG_CHARS,
        n_lines,
        step.model_seconds,
        step.tool_seconds,
        step.prompt_tokens,
        step.completion_tokens,
    )


# ---- grades -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestRow:
    test: str
    group: str
    """``FAIL_TO_PASS`` or ``PASS_TO_PASS``."""
    outcome: str
    ok: bool


@dataclass(frozen=True)
class GradeView:
    status: str
    resolved: bool
    applied_with: str | None
    infra_error: str | None
    exit_code: int | None
    log_tail: str
    tests: list[TestRow]
    failing: int


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def grade_view(grade: dict[str, Any] | None) -> GradeView | None:
    """The grader's report with its per-test outcomes, tests that did not pass first."""
    if not grade:
        return None
    rows = [
        TestRow(str(test), group, str(outcome), outcome == "passed")
        for group, key in (("FAIL_TO_PASS", "fail_to_pass"), ("PASS_TO_PASS", "pass_to_pass"))
        for test, outcome in _mapping(grade.get(key)).items()
    ]
    rows.sort(key=lambda row: (row.ok, row.group, row.test))
    return GradeView(
        str(grade.get("status", "")),
        bool(grade.get("resolved")),
        grade.get("applied_with"),
        grade.get("infra_error"),
        grade.get("exit_code"),
        str(grade.get("log_tail") or ""),
        rows,
        sum(not row.ok for row in rows),
    )
