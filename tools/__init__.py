"""The agent's tools (``bash``, ``edit``, ``create``, ``submit``): how a model calls them and what they do.

``definitions`` holds the tools as data and the OpenAI and CWM documentation made from them; ``calls``
reads a call from a model's message in either format (and writes CWM's); ``execute`` runs a call
against an ``envs.runtime.Runtime``.
"""
