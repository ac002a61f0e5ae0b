"""The replay policy: a stored episode's actions sent again, turn by turn, as its model sent them.

Turn N answers with step N's action: the recorded call with the model's text before it, or, for a step
whose output could not be parsed (a format error, recorded as raw text), that text verbatim with no call.
After the last step every turn submits. The call is written in the format the request asks for, whatever
the format the episode was recorded in; the conversation must be about the episode's task.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from core.errors import ForagerError
from forager.policies.conversation import Action, PolicyError, conversation_task_id, turn_number
from forager.policies.server import policy_app
from storage.models import Episode
from storage.store import Store
from tools.calls import FormatError, ToolCall, parse_cwm

_SUBMIT = Action("", ToolCall("submit", {}))
# The opening tag as tools.calls reads it; used only on a text holding exactly one well-formed block.
_OPENING = re.compile(r"<tool:[^<>\n]*>")


def replay_actions(episode: Episode) -> list[Action]:
    """The actions of ``episode``'s steps, in order (``episode.steps`` loaded)."""
    actions = []
    for step in episode.steps:
        if isinstance(step.action, str):
            actions.append(Action(step.action, None))
        else:
            call = ToolCall(step.action["tool"], dict(step.action["arguments"]))
            actions.append(Action(_reasoning(step.thought), call))
    return actions


def replay_app(store: Store, episode_id: str) -> web.Application:
    """Episode ``episode_id`` of ``store`` replayed as the OpenAI-compatible model ``replay``.

    Raises:
        ForagerError: the store holds no such episode.
    """
    episode = store.get_episode(episode_id)
    if episode is None:
        raise ForagerError(f"no episode {episode_id!r} in {store.url}: check the episode id and --db")
    actions = replay_actions(episode)
    instance_id = episode.task.instance_id

    def policy(messages: list[dict[str, Any]]) -> Action:
        asked = conversation_task_id(messages)
        if asked != instance_id:
            raise PolicyError(
                f"this server replays episode {episode_id} of task {instance_id!r}, but the conversation "
                f"is about task {asked!r}: run the replay on the episode's task"
            )
        turn = turn_number(messages)
        return actions[turn] if turn < len(actions) else _SUBMIT

    return policy_app("replay", policy)


def _reasoning(thought: str | None) -> str:
    """The model's text before its call.

    A CWM turn is recorded with its whole message as the thought, block included; the block is cut off
    here, since the server writes the call itself (in the requested format) after the text.
    """
    text = thought or ""
    try:
        parse_cwm(text)
    except FormatError:
        return text  # no block in it (a function-calling turn's text)
    opening = _OPENING.search(text)
    assert opening is not None, "parse_cwm found a block"
    return text[: opening.start()].rstrip()
