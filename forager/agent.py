"""The ForagerAgent: one episode of a model solving a task through the tools, recorded step by step.

The loop is small on purpose: ask the model, parse one action, execute it in the environment, append
the observation, repeat until the model submits or a budget runs out. Every ending has its own exit
reason. The submission (or, without one, the final diff) is then graded in a fresh environment, and the
episode with all its steps is written in one transaction by the caller.

Tool calls run in a worker thread (the Docker runtime is synchronous), so many episodes can share one
event loop and one model client.
"""

from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from core.errors import ForagerError
from envs.backend import Backend, Limits
from envs.grading import Grade
from envs.runtime import DiffError, EnvironmentDied, Runtime
from envs.tasks import grade_task, prepare
from forager.conversation import assistant_message, assistant_turn, observation_messages, opening_messages
from forager.model import Completion, ModelClient, ModelError
from forager.prompts import Prompts
from storage import Episode, EpisodeStatus, Image, Step, Task
from tools.calls import FormatError, ToolCall, parse_cwm, parse_openai
from tools.definitions import cwm_tool_docs, openai_tools
from tools.execute import ToolResult, execute

ActionFormat = Literal["function_calling", "cwm_text"]
ExitReason = Literal[
    "submitted", "max_turns", "max_tokens", "wall_clock", "context_overflow", "format_errors", "model_error",
    "infra_error",
]  # fmt: skip


@dataclass(frozen=True)
class AgentConfig:
    """Budgets and formats of an episode."""

    action_format: ActionFormat = "function_calling"
    max_turns: int = 128
    max_tokens: int | None = None
    """Prompt plus completion tokens over the whole episode."""
    wall_clock: float = 3600.0
    command_timeout: float = 120.0
    max_format_errors: int = 3
    """Consecutive malformed actions that end the episode."""
    observation_chars: int = 16_000
    """Longest observation sent to the model and stored (head and tail are kept)."""
    grade_timeout: float = 900.0
    limits: Limits = field(default_factory=Limits)
    prompts: Prompts = field(default_factory=Prompts.load)

    def to_json(self) -> dict[str, Any]:
        return {
            "action_format": self.action_format,
            "max_turns": self.max_turns,
            "max_tokens": self.max_tokens,
            "wall_clock": self.wall_clock,
            "command_timeout": self.command_timeout,
            "max_format_errors": self.max_format_errors,
            "observation_chars": self.observation_chars,
        }


@dataclass
class StepRecord:
    """One turn: what the model said, the action taken, what came back."""

    index: int
    thought: str | None
    action: dict[str, Any] | str
    """``{"tool": name, "arguments": {...}}``, or the raw text when it could not be parsed."""
    observation: str
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    turn_seconds: float = 0.0
    """The whole turn: asking the model, parsing, executing, recording."""
    message: dict[str, Any] | None = None
    """The assistant message as appended to the conversation (see ``forager.conversation``)."""

    @property
    def overhead_seconds(self) -> float:
        """What the agent itself spent on the turn: neither the model nor the tool."""
        return max(0.0, self.turn_seconds - self.model_seconds - self.tool_seconds)


class EpisodeRun:
    """A running episode. :func:`run_episode` drives it to the end; the Python API steps it by hand."""

    def __init__(
        self,
        task: Task,
        image: Image,
        model: ModelClient,
        backend: Backend,
        config: AgentConfig,
        *,
        model_name: str,
        policy: str | None = None,
    ) -> None:
        self.task = task
        self.image = image
        self.model = model
        self.backend = backend
        self.config = config
        self.model_name = model_name
        self.policy = policy
        self.id = uuid.uuid4().hex
        self.steps: list[StepRecord] = []
        self.messages: list[dict[str, Any]] = []
        self.env: Runtime | None = None
        self.exit_reason: ExitReason | None = None
        self.patch: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.error: str | None = None
        self._format_errors = 0
        self._base = "HEAD"
        """The starting commit, once the environment is started: what the patch is taken against."""
        self._started = time.monotonic()
        self._started_at = datetime.now(UTC)

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the environment in the task's starting state and write the opening messages."""
        self.env = await asyncio.to_thread(
            self.backend.start,
            self.image.tag,
            episode=self.id,
            limits=self.config.limits,
            # Outlives the episode's wall clock by the time grading may take: even a worker killed with
            # no gc to follow leaves nothing running for long.
            lifetime=self.config.wall_clock + self.config.grade_timeout,
        )
        await asyncio.to_thread(prepare, self.env, self.task.kind, self.task.setup_patch)
        # The diff is taken against the starting commit, not HEAD: work the model commits is still its work.
        head = await asyncio.to_thread(self.env.run, f"git -C {shlex.quote(self.env.workdir)} rev-parse HEAD")
        if head.exit_code != 0:
            raise EnvironmentDied(f"the task's starting commit cannot be read: {head.output[-300:]}")
        self._base = head.output.strip()
        system, user = self.config.prompts.render(
            workdir=self.env.workdir,
            tool_docs="\n" + cwm_tool_docs() if self.config.action_format == "cwm_text" else "",
            instance_id=self.task.instance_id,
            problem_statement=self.task.problem_statement,
            test_command=self.image.test_command or "python -m pytest",
        )
        self.messages = opening_messages(system, user)

    @property
    def done(self) -> bool:
        return self.exit_reason is not None

    async def play(self, on_step: Callable[[StepRecord], None] | None = None) -> tuple[Episode, list[Step]]:
        """Start, take turns until the episode ends (``on_step`` sees each), grade; the records to store."""
        try:
            await self.start()
        except ForagerError as exc:  # a dead engine, a missing image, a setup patch that no longer applies
            self.exit_reason, self.error = "infra_error", str(exc)
        while not self.done:
            record = await self.step()
            if record is not None and on_step is not None:
                on_step(record)
        return await self.finish()

    def close(self) -> None:
        if self.env is not None:
            self.env.close()

    # -- one turn ---------------------------------------------------------------------------------------

    async def step(self) -> StepRecord | None:
        """Ask the model for one action and execute it; None once the episode has ended."""
        if self.done:
            return None
        if (budget := self._budget_exceeded()) is not None:
            self.exit_reason = budget
            return None
        started = time.perf_counter()
        try:
            completion = await self.model.complete(self.messages, self._tools())
        except ModelError as exc:
            self.exit_reason = "context_overflow" if exc.kind == "context_overflow" else "model_error"
            self.error = str(exc)
            return None
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        record = await self._act(completion)
        record.turn_seconds = time.perf_counter() - started
        return record

    async def inject(self, call: ToolCall, thought: str | None = None) -> StepRecord:
        """Execute ``call`` as if the model had made it (debugging): recorded as a step like any other."""
        message = assistant_message(self.config.action_format, thought, call)
        completion = Completion(
            content=message.get("content"),
            tool_calls=message.get("tool_calls", []),
            reasoning=None,
            finish_reason="stop",
            prompt_tokens=0,
            completion_tokens=0,
            latency=0.0,
            retries=0,
            message=message,
        )
        return await self._act(completion)

    async def _act(self, completion: Completion) -> StepRecord:
        assistant = assistant_turn(completion.message)
        self.messages.append(assistant)
        call, error = self._parse(completion)
        record = StepRecord(
            index=len(self.steps),
            thought=_thought(completion),
            action=_action_json(call) if call else (completion.content or ""),
            observation="",
            model_seconds=completion.latency,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            message=assistant,
        )
        if call is None:
            self._format_errors += 1
            record.observation = str(error)
            self.messages += observation_messages(self.config.action_format, assistant, record.observation)
            if self._format_errors >= self.config.max_format_errors:
                self.exit_reason = "format_errors"
        else:
            self._format_errors = 0
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(self._execute, call)
            except EnvironmentDied as exc:
                self.exit_reason, self.error = "infra_error", str(exc)
                result = ToolResult(f"The environment failed: {exc}", ok=False)
            record.tool_seconds = time.monotonic() - started
            record.observation = _cap(result.output, self.config.observation_chars)
            self.messages += observation_messages(self.config.action_format, assistant, record.observation)
            if result.submitted:
                self.exit_reason, self.patch = "submitted", result.patch
        self.steps.append(record)
        return record

    def _parse(self, completion: Completion) -> tuple[ToolCall | None, FormatError | None]:
        """(the call to execute, or the format error if none can be); calls after the first are not."""
        try:
            if self.config.action_format == "function_calling":
                if not completion.tool_calls:
                    raise FormatError("No tool call found: call exactly one of the tools in each reply.")
                return parse_openai(completion.tool_calls[:1]), None
            return parse_cwm(completion.content or ""), None
        except FormatError as exc:
            return None, exc

    def _tools(self) -> list[dict[str, Any]] | None:
        """The tool schemas offered with each request: none in the CWM text format (the system prompt
        documents its tools)."""
        return openai_tools() if self.config.action_format == "function_calling" else None

    def _execute(self, call: ToolCall) -> ToolResult:
        assert self.env is not None
        return execute(call, self.env, timeout=self.config.command_timeout, base=self._base)

    def _budget_exceeded(self) -> ExitReason | None:
        if len(self.steps) >= self.config.max_turns:
            return "max_turns"
        if (
            self.config.max_tokens is not None
            and self.prompt_tokens + self.completion_tokens >= self.config.max_tokens
        ):
            return "max_tokens"
        if time.monotonic() - self._started >= self.config.wall_clock:
            return "wall_clock"
        return None

    # -- the end ----------------------------------------------------------------------------------------

    async def finish(self) -> tuple[Episode, list[Step]]:
        """Grade the outcome in a fresh environment and build the records (not yet stored)."""
        grade_result: Grade | None = None
        if self.exit_reason != "infra_error":
            if self.patch is None and self.env is not None:
                try:
                    self.patch = await asyncio.to_thread(self.env.diff, self._base)
                except DiffError as exc:  # the model broke the repository's git data: nothing to grade
                    self.error = str(exc)
                except EnvironmentDied as exc:
                    self.exit_reason, self.error = "infra_error", str(exc)
            if self.exit_reason != "infra_error":
                try:
                    grade_result = await asyncio.to_thread(self._grade, self.patch or "")
                except ForagerError as exc:  # the grading environment could not be made
                    self.exit_reason, self.error = "infra_error", str(exc)
        failed = self.exit_reason in ("infra_error", "model_error") or (
            grade_result is not None and grade_result.status == "error"
        )
        episode = Episode(
            id=self.id,
            task_id=self.task.id,
            model=self.model_name,
            policy=self.policy,
            action_format=self.config.action_format,
            status=EpisodeStatus.FAILED if failed else EpisodeStatus.COMPLETED,
            exit_reason=self.exit_reason or "max_turns",
            resolved=grade_result.resolved if grade_result else None,
            reward=1.0 if grade_result and grade_result.resolved else 0.0 if grade_result else None,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            final_patch=self.patch,
            grade=grade_result.to_json() if grade_result else None,
            config={**self.config.to_json(), "error": self.error},
            system_prompt=self.messages[0]["content"] if self.messages else None,
            task_prompt=self.messages[1]["content"] if len(self.messages) > 1 else None,
            tools=self._tools(),
            started_at=self._started_at,
            finished_at=datetime.now(UTC),
        )
        steps = [
            Step(
                index=s.index,
                thought=s.thought,
                action=s.action,
                observation=s.observation,
                model_seconds=s.model_seconds,
                tool_seconds=s.tool_seconds,
                prompt_tokens=s.prompt_tokens,
                completion_tokens=s.completion_tokens,
                message=s.message,
            )
            for s in self.steps
        ]
        return episode, steps

    def _grade(self, patch: str) -> Grade:
        return grade_task(
            self.backend,
            self.task,
            self.image,
            patch,
            timeout=self.config.grade_timeout,
            episode=f"{self.id}-grade",
        )


async def run_episode(
    task: Task,
    image: Image,
    model: ModelClient,
    backend: Backend,
    config: AgentConfig,
    *,
    model_name: str,
    policy: str | None = None,
) -> tuple[Episode, list[Step]]:
    """Run one episode to its end and return its records; the environment is always removed."""
    run = EpisodeRun(task, image, model, backend, config, model_name=model_name, policy=policy)
    try:
        return await run.play()
    finally:
        await asyncio.to_thread(run.close)


def _thought(completion: Completion) -> str | None:
    """The model's reasoning and text, without a CWM tool block (that is the step's action)."""
    content = (completion.content or "").split("<tool:", 1)[0].strip()
    parts = [part for part in (completion.reasoning, content) if part]
    return "\n\n".join(parts) or None


def _action_json(call: ToolCall) -> dict[str, Any]:
    return {"tool": call.name, "arguments": dict(call.arguments)}


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters elided ...]\n{text[-half:]}"
