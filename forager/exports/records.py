"""What every export format reads from one stored episode: its conversation and its metadata.

An exporter never touches the ORM objects beyond this module: :func:`record` turns an ``Episode``
(with ``steps``, ``task``, ``task.image`` and ``task.image.repository`` loaded) into an
:class:`EpisodeRecord` of plain values. Every value has one type whatever the episode, so that columnar
readers (``datasets``, pyarrow) infer one schema: tool-call ``arguments`` are JSON strings, and the
objects keyed by test ids or tool parameter names (the grade, the tool schemas, the generation config)
are JSON strings too, never objects whose fields would differ from row to row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from envs.swebench import repo_name
from forager.conversation import conversation
from storage import Episode, Step
from tools.definitions import openai_tools

Message = dict[str, Any]


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode as exporters see it."""

    trajectory_id: str
    instance_id: str
    task_id: int
    repository: str
    """``owner/name`` when the source has one, else the name the repository was stored under."""
    task_kind: str
    operator: str | None
    """The mutation operator of a mutate-fix task; None for issue-fix tasks."""
    model: str
    policy: str | None
    action_format: str
    status: str
    exit_reason: str
    resolved: bool | None
    reward: float | None
    model_patch: str
    n_steps: int
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime
    messages: list[Message]
    """Exactly the conversation the model saw: system, task prompt, assistant turns, observations."""
    tools: list[dict[str, Any]]
    """The OpenAI tool schemas offered to the model; empty for the text formats (they are in the prompt)."""
    actions: list[dict[str, Any] | str]
    """Each step's parsed action (``{"tool", "arguments"}``), or the raw text of a malformed one."""
    observations: list[str]
    grade: dict[str, Any] | None
    config: dict[str, Any]
    context_shortened: bool = False
    """Whether texts were shortened to fit the context window: then ``messages`` (the conversation at
    the end) is not what the earlier requests sent, and :attr:`requests` tells those apart."""
    requests: tuple[RequestRow, ...] | None = None
    """With ``record(..., per_request=True)`` and a shortened context: the conversation cut where it was
    shortened (:func:`request_rows`); None otherwise (the conversation is one row)."""

    def rows(self) -> tuple[RequestRow, ...]:
        """What the SFT rows of the episode hold: :attr:`requests`, else the whole conversation."""
        if self.requests is not None:
            return self.requests
        return (RequestRow(0, max(self.n_steps - 1, 0), self.messages),)

    @property
    def config_json(self) -> str:
        return json.dumps(_generation_config(self.config), sort_keys=True)


@dataclass(frozen=True)
class RequestRow:
    """Messages in which every assistant turn, from request ``first`` to request ``last`` (step
    indices), follows exactly the messages its request sent."""

    first: int
    last: int
    messages: list[Message]


def record(episode: Episode, *, per_request: bool = False) -> EpisodeRecord:
    """The exporters' view of ``episode``; with ``per_request``, its :attr:`EpisodeRecord.requests`."""
    task = episode.task
    repository = task.image.repository
    steps = sorted(episode.steps, key=lambda step: step.index)
    shortened_at = _shortened_at(episode)
    messages = [_message(m) for m in conversation(episode, steps)]
    # A conversation never shortened is its own single row: nothing to cut.
    requests = request_rows(episode, steps, shortened_at) if per_request and shortened_at else None
    return EpisodeRecord(
        trajectory_id=episode.id,
        instance_id=task.instance_id,
        task_id=task.id,
        repository=repo_name(repository.source, repository.name, task.meta),
        task_kind=str(task.kind),  # a StrEnum member: its value
        operator=task.operator,
        model=episode.model,
        policy=episode.policy,
        action_format=episode.action_format,
        status=str(episode.status),
        exit_reason=episode.exit_reason,
        resolved=episode.resolved,
        reward=episode.reward,
        model_patch=text(episode.final_patch or ""),
        n_steps=len(steps),
        prompt_tokens=episode.prompt_tokens,
        completion_tokens=episode.completion_tokens,
        created_at=episode.created_at,
        messages=messages,
        tools=_tools(episode),
        actions=[step.action for step in steps],
        observations=[text(step.observation) for step in steps],
        grade=episode.grade,
        config=dict(episode.config or {}),
        context_shortened=bool(shortened_at),
        requests=requests,
    )


def _shortened_at(episode: Episode) -> list[int]:
    """The requests (step indices) at which texts were shortened, in order."""
    context = (episode.config or {}).get("context") or {}
    return sorted({int(item["at"]) for item in context.get("shortened", [])})


def request_rows(episode: Episode, steps: list[Step], shortened_at: list[int]) -> tuple[RequestRow, ...]:
    """The episode's conversation as rows in which every assistant turn follows exactly what its request
    sent: one row when nothing was shortened (the whole conversation), else one row per stretch of
    requests between two shortenings, which ends with the answer to the stretch's last request (the
    last row is the conversation at the end: it also holds the observation of the last turn).

    Between shortenings the conversation only grows, so each request's messages are a prefix of the
    next one's: a row holds the last request of its stretch plus its answer, and every earlier turn in
    it saw exactly what precedes it. Shortening rewrites earlier messages, so the next request starts
    a new row.
    """
    n = len(steps)
    if not n:
        return ()
    cuts = [at for at in shortened_at if 0 < at < n]
    rows = []
    for first, end in zip([0, *cuts], [*cuts, n], strict=True):
        last = end - 1
        if end == n and not any(at >= n for at in shortened_at):
            messages = conversation(episode, steps)  # the final conversation: nothing after changed it
        else:
            sent = conversation(episode, steps, before_step=last)
            # The answer to request ``last``, as the next request shows it (only older turns' texts are
            # ever shortened, never the latest answer).
            after = conversation(episode, steps, before_step=last + 1)
            messages = [*sent, next(m for m in reversed(after) if m["role"] == "assistant")]
        rows.append(RequestRow(first, last, [_message(m) for m in messages]))
    return tuple(rows)


_SURROGATE = re.compile("[\ud800-\udfff]")


def text(value: str) -> str:
    """``value`` as valid Unicode: a lone surrogate (an undecodable byte of tool output, which the store
    keeps) becomes U+FFFD, as UTF-8 writers (pyarrow, JSON readers) require."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def _message(message: Message) -> Message:
    """``message`` with one type per field: text content (or null), tool calls with string arguments.

    An assistant message always has ``tool_calls`` (empty in the text format), the other roles never:
    the messages of every episode with a turn then differ in their keys, which makes ``datasets`` read
    them as JSON objects (kept as written) rather than infer a struct from the first rows that later
    rows with other keys would not fit.
    """
    content = message.get("content")
    if isinstance(content, list):  # multi-part content: its text parts, in order
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    out: Message = {"role": message["role"], "content": None if content is None else text(content)}
    if message["role"] == "assistant":
        out["tool_calls"] = [
            {
                "id": call.get("id") or "",
                "type": call.get("type") or "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": text(_arguments(call["function"].get("arguments"))),
                },
            }
            for call in message.get("tool_calls") or ()
        ]
    if message.get("tool_call_id") is not None:
        out["tool_call_id"] = message["tool_call_id"]
    return out


def _arguments(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments or {})


def _tools(episode: Episode) -> list[dict[str, Any]]:
    if episode.tools is not None:
        return list(episode.tools)
    if episode.action_format == "function_calling":
        # Episodes stored before the offered schemas were recorded had all been offered Forager's tools.
        return openai_tools()
    return []


#: Keys of an episode's config that are not how it was generated (older episodes kept their prompts
#: there) or that differ per episode.
_NOT_CONFIG = ("system_prompt", "task_prompt", "error")


def _generation_config(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in _NOT_CONFIG}
