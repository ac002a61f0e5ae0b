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
from forager.context import KEEP_CHARS, Part, PromptSize, Shortening, fit
from forager.conversation import assistant_message, build_messages, opening_messages
from forager.model import ModelClient
from forager.model_errors import ModelError
from forager.model_replies import Completion
from forager.prompts import Prompts
from forager.reasoning import ReasoningPolicy, field_reasoning, sent_back, split_inline
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
    max_completion_tokens: int | None = 4096
    """Most tokens the model may generate in one turn (sent as the request's cap); a reply cut there is
    recorded with ``finish_reason`` ``length``. None: the server's own limit."""
    context_window: int | None = None
    """The model's context window in tokens; None: as the server says, if it does (the conversation is
    then fitted to it, :mod:`forager.context`), else not fitted."""
    shortened_chars: int = KEEP_CHARS
    """What a text shortened to fit the context window keeps of itself (head and tail)."""
    reasoning: ReasoningPolicy = "drop"
    """Whether a turn's thinking is sent back to the model on later turns (:mod:`forager.reasoning`)."""
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
            "max_completion_tokens": self.max_completion_tokens,
            "context_window": self.context_window,
            "shortened_chars": self.shortened_chars,
            "reasoning": self.reasoning,
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
    finish_reason: str | None = None
    """Why the model stopped: ``stop``, ``tool_calls``, or ``length`` for a reply cut at the cap."""

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
        self._opening: tuple[str, str] | None = None
        self._window: int | None = config.context_window
        self._window_known = config.context_window is not None
        self._prompt_size = PromptSize()
        self._shortened: dict[tuple[int, Part], int] = {}
        """Each text shortened to fit the window, and the step whose request first had it shortened."""

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
        self._opening = (system, user)
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
            completion = await self._ask()
        except ModelError as exc:
            self.exit_reason = "context_overflow" if exc.kind == "context_overflow" else "model_error"
            self.error = str(exc)
            return None
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        record = await self._act(completion)
        record.turn_seconds = time.perf_counter() - started
        return record

    async def _ask(self) -> Completion:
        """The model's reply to the conversation, fitted to the context window first (up to two more
        tries, with dearer estimates, when the server refuses a request as too long)."""
        if not self._window_known:
            self._window, self._window_known = await self.model.context_window(), True
        for attempt in range(3):
            self._fit()
            try:
                completion = await self.model.complete(
                    self.messages, self._tools(), max_tokens=self.config.max_completion_tokens
                )
            except ModelError as exc:
                if exc.kind != "context_overflow" or self._window is None or attempt == 2:
                    raise
                self._prompt_size.refused()
                continue
            self._prompt_size.report(self.messages, completion.prompt_tokens)
            return completion
        raise AssertionError("unreachable")

    def _fit(self) -> None:
        """Shorten texts (the policy of :mod:`forager.context`) until the next request leaves room for a
        whole reply; raise ModelError ``context_overflow`` when nothing more can be shortened."""
        if self._window is None or not self._prompt_size.known:
            return
        limit = self._window - (self.config.max_completion_tokens or 0)
        chosen = fit(
            self._conversation,
            self._prompt_size,
            len(self.steps),
            frozenset(self._shortened),
            limit,
        )
        if chosen is None:
            estimate = self._prompt_size.estimate(self._conversation(frozenset(self._shortened)))
            raise ModelError(
                "context_overflow",
                f"the conversation does not fit the context window of {self._window} tokens even with "
                f"every older observation shortened (about {estimate} prompt tokens, plus "
                f"{self.config.max_completion_tokens} for the reply): lower max_completion_tokens or "
                "observation_chars, or serve the model with a longer context",
            )
        for unit in chosen - self._shortened.keys():
            self._shortened[unit] = len(self.steps)
        self.messages = self._conversation(chosen)

    def _conversation(self, shortened: frozenset[tuple[int, Part]] | None = None) -> list[dict[str, Any]]:
        """The conversation of the steps so far, with ``shortened`` (default: those made) shortened."""
        system, user = self._opening or (None, None)
        turns = [(s.message or {}, s.observation) for s in self.steps]
        chosen = self._shortened.keys() if shortened is None else shortened
        return build_messages(
            self.config.action_format, system, user, turns, chosen, self.config.shortened_chars
        )

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
        assistant = sent_back(completion.message, self.config.reasoning)
        inline, answer = split_inline(completion.content)
        call, error = self._parse(completion.tool_calls, answer)
        record = StepRecord(
            index=len(self.steps),
            thought=_thought(field_reasoning(completion.message), inline, answer),
            action=_action_json(call) if call else (completion.content or ""),
            observation="",
            model_seconds=completion.latency,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            message=assistant,
            finish_reason=completion.finish_reason,
        )
        if call is None:
            self._format_errors += 1
            record.observation = str(error)
            if completion.finish_reason == "length":
                record.observation = (
                    f"Your reply was cut at the limit of {self.config.max_completion_tokens} tokens per turn "
                    f"before it held a whole action: reply more briefly. {record.observation}"
                )
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
            if result.submitted:
                self.exit_reason, self.patch = "submitted", result.patch
        self.steps.append(record)
        self.messages = self._conversation()
        return record

    def _parse(
        self, tool_calls: list[dict[str, Any]], answer: str
    ) -> tuple[ToolCall | None, FormatError | None]:
        """(the call to execute, or the format error if none can be); calls after the first are not.

        ``answer`` is the reply's text without its thinking: a tool block inside ``<think>`` is no call.
        """
        try:
            if self.config.action_format == "function_calling":
                if not tool_calls:
                    raise FormatError("No tool call found: call exactly one of the tools in each reply.")
                return parse_openai(tool_calls[:1]), None
            return parse_cwm(answer), None
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
            config={**self.config.to_json(), "error": self.error, **self._turn_records()},
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

    def _turn_records(self) -> dict[str, Any]:
        """What the episode's config records of its turns: each reply's finish reason, and the context
        window with the texts shortened to fit it (what ``forager.conversation`` needs to rebuild the
        requests exactly)."""
        shortened = [Shortening(step, part, at) for (step, part), at in self._shortened.items()]
        return {
            "finish_reasons": [s.finish_reason for s in self.steps],
            "context": {
                "window": self._window,
                "keep_chars": self.config.shortened_chars,
                "shortened": [s.to_json() for s in sorted(shortened, key=lambda s: (s.at, s.step, s.part))],
            },
        }

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


def _thought(reasoning: str | None, inline: str | None, answer: str) -> str | None:
    """The model's thinking (a reasoning field's, then inline) and the text of its answer without a CWM
    tool block (that is the step's action)."""
    text = answer.split("<tool:", 1)[0].strip()
    parts = [part for part in (reasoning, inline, text) if part]
    return "\n\n".join(parts) or None


def _action_json(call: ToolCall) -> dict[str, Any]:
    return {"tool": call.name, "arguments": dict(call.arguments)}


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters elided ...]\n{text[-half:]}"
