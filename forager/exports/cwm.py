"""``cwm``: each episode as the action/observation transitions of CWM's RL trajectory dumps.

One JSON object per line, laid out like the trajectories of CWM's released RL environments
(facebookresearch/cwm, ``cwm/rl``: ``rollout_to_dict`` with the token fields left out)::

    {"traj": {"transitions": [
        {"action_str": "", "observation_str": <task prompt>, "rewards": [], ...},
        {"action_str": <reasoning + <tool: NAME> block>, "observation_str": <tool output>,
         "rewards": [0.0], "terminal": false, "context_switch": false, "outcomes": {}, "info": {...}},
        ...,
        {"action_str": ..., "observation_str": "", "rewards": [<reward>], "terminal": true, ...}]},
     "truncation_return": <reward, when the episode ended without submitting>,
     "reward": ..., "system_prompt": ..., "data_src": {...}, "start_args": {...}, "metrics": {...}}

Actions are written in CWM's text tool format whatever the episode's format (an OpenAI tool call is
rendered as its ``<tool: NAME>`` block); a malformed action is the model's raw text. Without tokens a
transition carries one reward, on its last action token: the final reward on the last transition,
0.0 on the others. A submitted episode ends with a terminal transition (no observation, as CWM
requires); any other ending is a truncation whose assumed return is the final reward.
"""

from __future__ import annotations

from typing import Any

from forager.exports.output import JsonLinesWriter
from forager.exports.records import EpisodeRecord
from tools.calls import ToolCall, render_cwm


def cwm_action(thought: str | None, action: dict[str, Any] | str) -> str:
    """One action in CWM's text format: the reasoning, then the tool block."""
    if isinstance(action, str):
        return action
    try:
        block = render_cwm(ToolCall(action["tool"], dict(action["arguments"])))
    except ValueError:  # an OpenAI call CWM's format cannot express (a blank command ...): keep its data
        block = f"<tool: {action['tool']}>\n{action['arguments']}\n</tool>"
    return f"{thought}\n{block}" if thought else block


def cwm_rollout(rec: EpisodeRecord) -> dict[str, Any]:
    """The CWM trajectory dump of one episode."""
    reward = float(rec.reward or 0.0)
    thoughts = _thoughts(rec)
    transitions: list[dict[str, Any]] = [
        _transition("", _task_prompt(rec), [], terminal=False, info={"role": "start"})
    ]
    submitted = rec.exit_reason == "submitted"
    last = len(rec.actions) - 1
    for index, (action, observation) in enumerate(zip(rec.actions, rec.observations, strict=True)):
        final = index == last
        transitions.append(
            _transition(
                cwm_action(thoughts[index], action),
                "" if final and submitted else observation,
                [reward if final else 0.0],
                terminal=final and submitted,
                info={"step": index},
            )
        )
    dump: dict[str, Any] = {"traj": {"transitions": transitions}}
    if not submitted:
        dump["truncation_return"] = reward
    dump |= {
        "reward": reward,
        "system_prompt": rec.messages[0]["content"] if rec.messages else "",
        "data_src": {"source": "forager", "repository": rec.repository, "task_kind": rec.task_kind},
        "start_args": {"instance_id": rec.instance_id, "trajectory_id": rec.trajectory_id},
        "metrics": {
            "resolved": rec.resolved,
            "exit_reason": rec.exit_reason,
            "n_steps": rec.n_steps,
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
        },
        "model": rec.model,
    }
    return dump


def _transition(
    action: str, observation: str, rewards: list[float], *, terminal: bool, info: dict[str, Any]
) -> dict[str, Any]:
    return {
        "action_str": action,
        "observation_str": observation,
        "rewards": rewards,
        "terminal": terminal,
        "context_switch": False,
        "outcomes": {},
        "info": info,
    }


def _task_prompt(rec: EpisodeRecord) -> str:
    users = [m for m in rec.messages[:2] if m["role"] == "user"]
    return users[0]["content"] or "" if users else ""


def _thoughts(rec: EpisodeRecord) -> list[str | None]:
    """Each step's reasoning: the text of its assistant message before the tool block."""
    thoughts = []
    for message in rec.messages:
        if message["role"] != "assistant":
            continue
        content = message.get("content") or ""
        if not message.get("tool_calls"):
            content = content.split("<tool:", 1)[0]
        thoughts.append(content.strip() or None)
    return (thoughts + [None] * len(rec.actions))[: len(rec.actions)]


class CwmWriter(JsonLinesWriter):
    def write(self, rec: EpisodeRecord) -> bool:
        self.line(cwm_rollout(rec))
        return True
