"""``mini-swe-agent``: one ``.traj.json`` per episode, in mini-swe-agent's trajectory format 1.1.

The folder holds ``<instance_id>/<trajectory_id>.traj.json``, which ``mini-extra inspector FOLDER``
browses. Each file is what mini-swe-agent's ``DefaultAgent.save`` writes::

    {"info": {"model_stats": {...}, "config": {...}, "exit_status": ..., "submission": <patch>, ...},
     "messages": [...], "trajectory_format": "mini-swe-agent-1.1", "instance_id": ...}

``messages`` is the conversation the model saw; like mini-swe-agent's own, each assistant message
carries its parsed actions in ``extra.actions``, and the trajectory ends with an ``exit`` message whose
``extra`` holds the exit status and the submission.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

from forager.exports.driver import ExportSummary
from forager.exports.output import json_bytes
from forager.exports.records import EpisodeRecord

TRAJECTORY_FORMAT = "mini-swe-agent-1.1"
_UNSAFE = re.compile(r"[^\w.@+-]")


def mini_trajectory(rec: EpisodeRecord) -> dict[str, Any]:
    """The mini-swe-agent trajectory of one episode."""
    messages: list[dict[str, Any]] = []
    actions = iter(rec.actions)
    for message in rec.messages:
        message = dict(message)
        if message["role"] == "assistant":
            action = next(actions, None)
            message["extra"] = {"actions": [_action(action, message)] if action is not None else []}
        messages.append(message)
    messages.append(
        {
            "role": "exit",
            "content": rec.exit_reason,
            "extra": {"exit_status": rec.exit_reason, "submission": rec.model_patch},
        }
    )
    return {
        "info": {
            "model_stats": {"instance_cost": 0.0, "api_calls": rec.n_steps},
            "config": {"agent": rec.config, "agent_type": "forager.agent.EpisodeRun", "model": rec.model},
            "forager_version": version("forager"),
            "exit_status": rec.exit_reason,
            "submission": rec.model_patch,
            "resolved": rec.resolved,
            "reward": rec.reward,
            "repository": rec.repository,
            "tokens": {"prompt": rec.prompt_tokens, "completion": rec.completion_tokens},
        },
        "messages": messages,
        "trajectory_format": TRAJECTORY_FORMAT,
        "instance_id": rec.instance_id,
        "trajectory_id": rec.trajectory_id,
    }


def _action(action: dict[str, Any] | str, message: dict[str, Any]) -> dict[str, Any]:
    if isinstance(action, str):
        return {"command": "", "raw": action}
    calls = message.get("tool_calls") or [{}]
    arguments = action.get("arguments") or {}
    return {
        "command": arguments.get("command", ""),
        "tool": action.get("tool"),
        "arguments": arguments,
        "tool_call_id": calls[0].get("id"),
    }


class MiniSweAgentWriter:
    directory: ClassVar[bool] = True

    def __init__(self, path: Path) -> None:
        self._root = path

    def write(self, rec: EpisodeRecord) -> bool:
        folder = self._root / _UNSAFE.sub("_", rec.instance_id)
        folder.mkdir(exist_ok=True)
        (folder / f"{rec.trajectory_id}.traj.json").write_bytes(json_bytes(mini_trajectory(rec), indent=2))
        return True

    def close(self, summary: ExportSummary) -> None:
        """Nothing to finish: every file is complete when written."""
