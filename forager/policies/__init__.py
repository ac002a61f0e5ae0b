"""Policies that need no LLM, served over the OpenAI chat protocol like any model.

``conversation`` says what a policy is (:class:`~forager.policies.conversation.Action`, what it reads
from the conversation); ``protocol`` reads requests and shapes answers; ``server`` serves a policy over
HTTP; ``oracle`` solves tasks from their gold patch; ``replay`` sends a stored episode's actions again.
The agent cannot tell them from a model, so they exercise the whole pipeline end to end without a GPU.
"""

from forager.policies.conversation import Action, Policy, PolicyError
from forager.policies.oracle import oracle_action, oracle_app
from forager.policies.replay import replay_actions, replay_app
from forager.policies.server import policy_app, serve, start_in_thread

__all__ = [
    "Action",
    "Policy",
    "PolicyError",
    "oracle_action",
    "oracle_app",
    "policy_app",
    "replay_actions",
    "replay_app",
    "serve",
    "start_in_thread",
]
