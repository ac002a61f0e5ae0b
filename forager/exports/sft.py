"""``sft``: one JSON object per episode, the conversation the model saw plus what a trainer filters on.

Each line::

    {"messages": [...], "tools": "[...]", "trajectory_id": ..., "instance_id": ..., "repository": ...,
     "model": ..., "resolved": ..., "exit_reason": ..., "reward": ..., ...}

``messages`` are OpenAI chat messages: the system prompt, the task prompt, each assistant turn (with
``tool_calls`` and their ids for ``function_calling`` episodes, the ``<tool: …>`` text for
``cwm_text``), and each observation (a ``tool`` message answering its call id, or a ``user`` message).
Tool-call ``arguments`` are JSON strings, as the OpenAI API sends them. ``tools`` is the OpenAI
``tools`` list as a JSON string (``json.loads`` it for ``apply_chat_template(tools=...)``): parameter
schemas differ per tool, and as objects a columnar reader would merge them into one struct with every
tool's parameters, null-filled. The grade and the generation config are JSON strings for the same
reason. It loads with ``datasets.load_dataset("json", data_files=PATH)``, ``messages`` as a list of
JSON objects (``datasets.Json``) returned exactly as written. Episodes without a turn are skipped.

Which conversation: by default one row per episode, the conversation *at its end*, i.e. the messages
of its last request plus the last answer and observation. When texts were shortened to fit the context
window (``context_shortened`` true), the earlier requests had sent those texts whole, so the earlier
assistant turns of that row did not see exactly what precedes them. ``per_request=True`` (``forager
export sft --per-request``) writes such episodes as several rows instead, cut where the context was
shortened: in each, every assistant turn follows exactly the messages its request sent (requests
``first_request`` to ``last_request``; a row ends with the answer to the last of them, and the
episode's last row with the observation after it too, as the default row). An episode never
shortened is one row either way.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from forager.exports.driver import ExportSummary
from forager.exports.output import JsonLinesWriter
from forager.exports.records import EpisodeRecord, RequestRow


def sft_row(rec: EpisodeRecord, row: RequestRow) -> dict[str, Any]:
    """The SFT object of one episode (also the parquet row, under SWE trajectory column names).

    No field is ever null: ``datasets`` fixes each column's type from the first rows it reads, and a
    column null there could not take a value later. An episode that was not graded has ``graded``
    false (and ``resolved`` false, ``reward`` 0.0); a missing policy or operator is "". ``row`` is the
    episode's conversation or a part of it (:meth:`EpisodeRecord.rows`).
    """
    return {
        "messages": row.messages,
        "tools": json.dumps(rec.tools),
        "trajectory_id": rec.trajectory_id,
        "instance_id": rec.instance_id,
        "repository": rec.repository,
        "task_kind": rec.task_kind,
        "operator": rec.operator or "",
        "model": rec.model,
        "policy": rec.policy or "",
        "action_format": rec.action_format,
        "status": rec.status,
        "exit_reason": rec.exit_reason,
        "graded": rec.resolved is not None,
        "resolved": bool(rec.resolved),
        "reward": float(rec.reward or 0.0),
        "model_patch": rec.model_patch,
        "n_steps": rec.n_steps,
        "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens,
        "created_at": rec.created_at.isoformat(),
        "grade": json.dumps(rec.grade, sort_keys=True),
        "generation_config": rec.config_json,
        "context_shortened": rec.context_shortened,
        "first_request": row.first,
        "last_request": row.last,
    }


class SftWriter(JsonLinesWriter):
    per_request: ClassVar[bool] = True

    def write(self, rec: EpisodeRecord) -> bool:
        if not rec.n_steps:  # no assistant turn: nothing to train on
            return False
        for row in rec.rows():
            self.line(sft_row(rec, row))
            self.rows += 1
        return True

    def close(self, summary: ExportSummary) -> None:
        super().close(summary)
        summary.rows = self.rows
        if summary.skipped_by_writer:
            summary.notes.append(f"{summary.skipped_by_writer} episode(s) without a turn were skipped")
