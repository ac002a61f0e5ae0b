"""The Python API for debugging one episode, step by step, with the environment kept alive.

    from forager import Episode
    ep = Episode.from_task("calc.7bf874262c35.parameter_removed.f10b1", model="http://localhost:8000/v1")
    for step in ep.steps():          # or ep.run()
        print(step.action, step.observation)
    ep.act("bash", command="git diff")   # inject an action of your own
    ep.shell("ls -la")                   # look around without recording a step
    ep.close()

It runs its own event loop, so it is plain synchronous code in a REPL or a notebook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import ForagerError
from envs.backend import Backend, make_backend
from envs.runtime import Observation, Runtime
from forager.agent import ActionFormat, AgentConfig, EpisodeRun, StepRecord
from forager.model import ModelClient, ModelConfig
from forager.settings import DEFAULT_HOME, Settings
from storage import Episode as EpisodeRecord
from storage import Step, Store
from tools.calls import ToolCall


class Episode:
    """One live episode: its task's environment, the conversation so far, the steps taken."""

    def __init__(
        self, run: EpisodeRun, client: ModelClient, loop: asyncio.AbstractEventLoop, store: Store
    ) -> None:
        self._run = run
        self._client = client
        self._loop = loop
        self._store = store
        self.records: list[StepRecord] = run.steps

    @classmethod
    def from_task(
        cls,
        task_id: int | str,
        model: str = "http://localhost:8000/v1",
        format: ActionFormat = "cwm_text",  # shadows the builtin: the name the documented API uses
        *,
        model_name: str | None = None,
        db: str | None = None,
        home: Path = DEFAULT_HOME,
        backend: Backend | str = "docker",
        **config: Any,
    ) -> Episode:
        """Start an episode of a stored task against the server at ``model`` (an OpenAI-compatible URL).

        ``backend`` is where the environment runs: a :class:`envs.backend.Backend`, or the name of one
        (``docker``, the local engine; ``kubernetes``, the cluster of the current kubeconfig).
        """
        store = Store(Settings(home=home, db=db).db_url)
        task = store.get_task(task_id)
        if task is None:
            raise ForagerError(f"no task {task_id!r} in {store.url}")
        loop = asyncio.new_event_loop()
        client = ModelClient(ModelConfig(base_url=model, model=model_name))
        loop.run_until_complete(client.__aenter__())
        name = model_name or loop.run_until_complete(client.models())[0]
        agent = AgentConfig(action_format=format, **config)
        where = make_backend(backend, store=store) if isinstance(backend, str) else backend
        run = EpisodeRun(task, task.image, client, where, agent, model_name=name)
        episode = cls(run, client, loop, store)
        try:
            loop.run_until_complete(run.start())
        except BaseException:
            episode.close()
            raise
        return episode

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation as the model sees it."""
        return self._run.messages

    @property
    def runtime(self) -> Runtime | None:
        """The running environment (None once closed)."""
        return self._run.env

    @property
    def container(self) -> Any:
        """On Docker, the environment's container (``docker exec -it <container.id> bash`` to look in)."""
        return getattr(self._run.env, "container", None)

    @property
    def done(self) -> bool:
        return self._run.done

    @property
    def exit_reason(self) -> str | None:
        return self._run.exit_reason

    def step(self) -> StepRecord | None:
        """One model turn: ask, act, observe. None once the episode has ended."""
        return self._loop.run_until_complete(self._run.step())

    def steps(self) -> Iterator[StepRecord]:
        """Turn after turn until the episode ends."""
        while (record := self.step()) is not None:
            yield record

    def act(self, tool: str, thought: str | None = None, **arguments: str) -> StepRecord:
        """Take an action of your own, recorded as the next step (``ep.act("bash", command="ls")``)."""
        return self._loop.run_until_complete(self._run.inject(ToolCall(tool, arguments), thought))

    def shell(self, command: str, timeout: float | None = None) -> Observation:
        """Run a command in the environment without recording it (it still changes the environment)."""
        if self._run.env is None:
            raise ForagerError("the environment is closed")
        return self._run.env.run(command, timeout)

    def run(self) -> tuple[EpisodeRecord, list[Step]]:
        """Play the episode to its end, grade it and store it; returns the stored records."""
        for _ in self.steps():
            pass
        return self.finish()

    def finish(self) -> tuple[EpisodeRecord, list[Step]]:
        """Grade what there is now (the submission, or the current diff) and store the episode."""
        episode, steps = self._loop.run_until_complete(self._run.finish())
        self._store.save_episode(episode, steps)
        return episode, steps

    def close(self) -> None:
        """Remove the environment and close the model client. Safe to call twice."""
        self._run.close()
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()
        self._store.close()

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
