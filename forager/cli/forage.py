"""``forager forage``, ``forager episode`` and ``forager serve``: running episodes against a served model."""

from __future__ import annotations

import asyncio
import json as jsonlib
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from core.errors import ForagerError
from envs.backend import Backend
from envs.mutate_fix import MutateOptions, generate
from forager.agent import ActionFormat, AgentConfig, EpisodeRun, StepRecord
from forager.cli.output import (
    BackendOption,
    JsonOption,
    console,
    find_episode,
    find_image,
    find_task,
    open_backend,
    open_store,
    print_json,
    progress_display,
    settings,
)
from forager.model import ModelClient, ModelConfig
from forager.pipeline import forage as run_forage
from forager.prompts import Prompts
from forager.worker import item_config
from images.builder import BuildOptions, ImageBuilder
from images.engine import connect
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import ImageStatus, Store, Task, TaskKind, TaskStatus
from tools.calls import ToolCall

episode_app = typer.Typer(
    help="Run, show and replay single episodes (debugging one trajectory).", no_args_is_help=True
)
serve_app = typer.Typer(
    help="Serve policies that need no LLM (oracle, replay) over the OpenAI protocol.", no_args_is_help=True
)

ModelOption = Annotated[str, typer.Option("--model", help="Base URL of an OpenAI-compatible server (…/v1).")]
FormatOption = Annotated[
    str,
    typer.Option(
        "--format", help="Action format: function_calling (tool_calls) or cwm_text (CWM's text format)."
    ),
]
NameOption = Annotated[
    str | None, typer.Option("--model-name", help="Model id to request. Default: the server's first.")
]
StreamOption = Annotated[
    bool, typer.Option("--stream", help="Stream each answer (for proxies that cut idle connections).")
]
CapOption = Annotated[
    int, typer.Option(min=1, help="Most tokens the model may generate in one turn (sent with every request).")
]
WindowOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="The model's context window in tokens, to fit the conversation to. Default: as the server "
        "says (vLLM, SGLang, llama.cpp do); else not fitted.",
        show_default=False,
    ),
]
ReasoningOption = Annotated[
    str, typer.Option(help="keep or drop a turn's thinking (<think>, reasoning_content) on later turns.")
]


def forage(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Base URL of an OpenAI-compatible server (…/v1); not with --enqueue."),
    ] = None,
    action_format: FormatOption = "function_calling",
    model_name: NameOption = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="Build this source (repeatable), make mutate-fix tasks in it, and forage those tasks.",
        ),
    ] = None,
    tasks_per_image: Annotated[int, typer.Option(min=1, help="Mutate-fix tasks per --source image.")] = 5,
    kind: Annotated[TaskKind | None, typer.Option(help="Only tasks of this kind.")] = None,
    image: Annotated[int | None, typer.Option(help="Only tasks of this image id.")] = None,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Only these task ids (repeatable).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Episodes at once.")] = 8,
    episodes_per_task: Annotated[int, typer.Option(min=1, help="Episodes wanted per task.")] = 1,
    max_turns: Annotated[int, typer.Option(min=1, help="Turns one episode may take.")] = 128,
    max_tokens: Annotated[int | None, typer.Option(help="Token budget of one episode.")] = None,
    max_completion_tokens: CapOption = 4096,
    context_window: WindowOption = None,
    reasoning: ReasoningOption = "drop",
    wall_clock: Annotated[float, typer.Option(help="Seconds one episode may take.")] = 3600,
    command_timeout: Annotated[float, typer.Option(help="Seconds one command may take.")] = 120,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature. Default: the server's.", show_default=False)
    ] = None,
    system_prompt: Annotated[Path | None, typer.Option(help="A system prompt template file.")] = None,
    task_prompt: Annotated[Path | None, typer.Option(help="A task prompt template file.")] = None,
    backend: BackendOption = "docker",
    stream: StreamOption = False,
    enqueue: Annotated[
        bool,
        typer.Option("--enqueue", help="Queue the episodes for `forager worker`s instead of running them."),
    ] = False,
    json: JsonOption = False,
) -> None:
    """Run episodes of verified tasks against a served model; store every one, graded (resumable)."""
    store = open_store(ctx)
    where = open_backend(backend, store)
    if source:
        tasks = _tasks_from_sources(ctx, store, where, source, tasks_per_image)
    else:
        tasks = _select_tasks(store, kind, image, task)
    config = _agent_config(
        action_format, max_turns, max_tokens, wall_clock, command_timeout, system_prompt, task_prompt,
        max_completion_tokens=max_completion_tokens, context_window=context_window, reasoning=reasoning,
    )  # fmt: skip
    if enqueue:
        _enqueue(store, tasks, config, episodes_per_task, json)
        return
    if model is None:
        raise typer.BadParameter("name the model server, or pass --enqueue", param_hint="--model")

    async def go():
        async with ModelClient(
            ModelConfig(base_url=model, model=model_name, temperature=temperature, stream=stream)
        ) as client:
            name = model_name or (await client.models())[0]
            with progress_display(transient=False) as progress:
                return await run_forage(
                    store, tasks, client, where, config, model_name=name,
                    episodes_per_task=episodes_per_task, concurrency=concurrency, progress=progress,
                )  # fmt: skip

    summary = asyncio.run(go())
    data = {
        "episodes": summary.episodes, "resolved": summary.resolved, "failed": summary.failed,
        "skipped": summary.skipped, "exit_reasons": dict(summary.exit_reasons), "tokens": summary.tokens,
        "seconds": round(summary.seconds, 1), "tokens_per_second": round(summary.tokens_per_second, 1),
    }  # fmt: skip
    if json:
        print_json(data)
        return
    table = Table(
        "episodes", "resolved", "failed", "skipped (done before)", "exit reasons", "tokens/s", box=None
    )
    reasons = ", ".join(f"{reason} {count}" for reason, count in summary.exit_reasons.most_common())
    counts = (summary.episodes, summary.resolved, summary.failed, summary.skipped)
    table.add_row(*map(str, counts), reasons or "-", f"{summary.tokens_per_second:.0f}")
    console.print(table)


def _enqueue(
    store: Store, tasks: list[Task], config: AgentConfig, episodes_per_task: int, json: bool
) -> None:
    """Queue the episodes for workers; items queued before (whatever their state) are not added again."""
    added = store.enqueue(
        [t.id for t in tasks], action_format=config.action_format, config=item_config(config),
        episodes_per_task=episodes_per_task,
    )  # fmt: skip
    counts = store.queue_counts()
    if json:
        print_json({"added": added, "queued": counts.queued, "leased": counts.leased, "done": counts.done})
        return
    console.print(
        f"{added} episodes queued ({len(tasks) * episodes_per_task - added} were already); the queue holds "
        f"{counts.queued} queued, {counts.leased} running, {counts.done} done: run `forager worker`",
        highlight=False,
    )


@episode_app.command("run")
def episode_run(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="TASK")],
    model: ModelOption,
    action_format: FormatOption = "function_calling",
    model_name: NameOption = None,
    max_turns: Annotated[int, typer.Option(min=1, help="Turns one episode may take.")] = 128,
    max_completion_tokens: CapOption = 4096,
    context_window: WindowOption = None,
    reasoning: ReasoningOption = "drop",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every turn.")] = False,
    backend: BackendOption = "docker",
    stream: StreamOption = False,
) -> None:
    """Run one episode of a task and store it."""
    store = open_store(ctx)
    task = find_task(store, ref)
    config = _agent_config(
        action_format, max_turns, None, 3600, 120, None, None,
        max_completion_tokens=max_completion_tokens, context_window=context_window, reasoning=reasoning,
    )  # fmt: skip

    async def go():
        async with ModelClient(ModelConfig(base_url=model, model=model_name, stream=stream)) as client:
            name = model_name or (await client.models())[0]
            run = EpisodeRun(task, task.image, client, open_backend(backend, store), config, model_name=name)
            try:
                return await run.play(print_step if verbose else None)
            finally:
                await asyncio.to_thread(run.close)

    episode, steps = asyncio.run(go())
    store.save_episode(episode, steps)
    outcome = "resolved" if episode.resolved else "not resolved"
    console.print(
        f"episode {episode.id}: {episode.exit_reason} after {len(steps)} steps, {outcome}", highlight=False
    )


@episode_app.command("show")
def episode_show(
    ctx: typer.Context,
    episode_id: Annotated[str, typer.Argument(metavar="EPISODE")],
    json: JsonOption = False,
) -> None:
    """Print a stored episode turn by turn."""
    episode = find_episode(open_store(ctx), episode_id)
    if json:
        print_json(
            {
                "id": episode.id, "task": episode.task.instance_id, "model": episode.model,
                "format": episode.action_format, "exit_reason": episode.exit_reason,
                "resolved": episode.resolved, "grade": episode.grade, "final_patch": episode.final_patch,
                "steps": [
                    {"index": s.index, "thought": s.thought, "action": s.action, "observation": s.observation}
                    for s in episode.steps
                ],
            }
        )  # fmt: skip
        return
    console.print(
        f"[bold]{episode.id}[/] task {escape(episode.task.instance_id)}, model {escape(episode.model)}, "
        f"{episode.action_format}: {episode.exit_reason}, resolved={episode.resolved}"
    )
    for step in episode.steps:
        print_step(step)


@episode_app.command("replay")
def episode_replay(
    ctx: typer.Context,
    episode_id: Annotated[str, typer.Argument(metavar="EPISODE")],
    backend: BackendOption = "docker",
) -> None:
    """Re-execute a stored episode's actions in a fresh environment; report where observations diverge.

    A determinism check of the environment: durations and memory addresses are masked before comparing.
    """
    store = open_store(ctx)
    episode = find_episode(store, episode_id)
    task = find_task(store, str(episode.task_id))
    config = _agent_config(episode.action_format, len(episode.steps) + 1, None, 3600, 120, None, None)

    async def go() -> list[tuple[int, str, str]]:
        # No model: every action comes from the record (EpisodeRun.inject never asks one).
        where = open_backend(backend, store)
        run = EpisodeRun(task, task.image, None, where, config, model_name=episode.model)  # type: ignore[arg-type]
        diverged = []
        try:
            await run.start()
            for step in episode.steps:
                if not isinstance(step.action, dict):
                    continue  # a format error: nothing was executed
                call = ToolCall(step.action["tool"], step.action["arguments"])
                record = await run.inject(call, step.thought)
                if comparable(record.observation) != comparable(step.observation):
                    diverged.append((step.index, step.observation, record.observation))
        finally:
            await asyncio.to_thread(run.close)
        return diverged

    diverged = asyncio.run(go())
    if not diverged:
        console.print(f"all {len(episode.steps)} observations reproduced")
        return
    for index, before, after in diverged:
        console.print(f"[bold]step {index} diverges[/]")
        console.print(f"--- recorded\n{escape(before[:2000])}\n--- replayed\n{escape(after[:2000])}")
    raise typer.Exit(1)


@serve_app.command("oracle")
def serve_oracle(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the oracle policy: solves tasks from their gold patch like a competent agent would."""
    from forager.policies.oracle import oracle_app
    from forager.policies.server import serve

    serve(oracle_app(open_store(ctx)), host, port)


@serve_app.command("replay")
def serve_replay(
    ctx: typer.Context,
    episode_id: Annotated[str, typer.Option("--episode", help="The stored episode to replay.")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve a stored episode's actions, turn by turn, as a model would."""
    from forager.policies.replay import replay_app
    from forager.policies.server import serve

    serve(replay_app(open_store(ctx), episode_id), host, port)


_VOLATILE = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|sec|seconds)\b|\b0x[0-9a-f]{6,}\b")


def comparable(observation: str) -> str:
    """An observation with what legitimately changes between runs masked: durations, memory addresses."""
    return _VOLATILE.sub("<volatile>", observation)


def print_step(step: StepRecord | object) -> None:
    """One turn, readably: thought, action, observation (shortened)."""
    thought = getattr(step, "thought", None)
    action = getattr(step, "action", "")
    observation = getattr(step, "observation", "")
    console.rule(f"step {getattr(step, 'index', '?')}")
    if thought:
        console.print(escape(thought.strip()[:2000]), style="dim", highlight=False)
    shown = jsonlib.dumps(action, indent=1) if isinstance(action, dict) else str(action)
    console.print(f"[bold cyan]action[/] {escape(shown[:2000])}", highlight=False)
    console.print(escape(observation[:3000]), highlight=False)


def _agent_config(
    action_format: str,
    max_turns: int,
    max_tokens: int | None,
    wall_clock: float,
    command_timeout: float,
    system_prompt: Path | None,
    task_prompt: Path | None,
    *,
    max_completion_tokens: int | None = 4096,
    context_window: int | None = None,
    reasoning: str = "drop",
) -> AgentConfig:
    if action_format not in ("function_calling", "cwm_text"):
        raise typer.BadParameter("use function_calling or cwm_text", param_hint="--format")
    if reasoning not in ("keep", "drop"):
        raise typer.BadParameter("use keep or drop", param_hint="--reasoning")
    fmt: ActionFormat = action_format  # type: ignore[assignment]
    return AgentConfig(
        action_format=fmt, max_turns=max_turns, max_tokens=max_tokens, wall_clock=wall_clock,
        command_timeout=command_timeout, prompts=Prompts.load(system_prompt, task_prompt),
        max_completion_tokens=max_completion_tokens, context_window=context_window,
        reasoning=reasoning,  # type: ignore[arg-type]
    )  # fmt: skip


def _tasks_from_sources(
    ctx: typer.Context, store: Store, backend: Backend, sources: list[str], per_image: int
) -> list[Task]:
    """Build the sources' images and generate mutate-fix tasks in the ready ones (both are cached)."""
    client = connect(timeout=3600)
    with progress_display(transient=False) as progress:
        builder = ImageBuilder(
            client,
            store,
            settings(ctx).home,
            BuildOptions(network=NetworkSettings.from_environment()),
            progress,
        )
        results = builder.build_many([parse_source(text) for text in sources], jobs=1)
        tasks: list[Task] = []
        for result in results:
            if result.status != ImageStatus.READY or result.tag is None:
                console.print(
                    f"{escape(result.source)}: not ready ({result.failure_class}), no tasks", highlight=False
                )
                continue
            image = find_image(store, result.tag)
            cache = settings(ctx).home / "images" / image.tag.removeprefix("forager/").replace(":", "/")
            report = generate(
                backend, store, image, MutateOptions(max_tasks=per_image), cache_dir=cache, progress=progress
            )
            tasks += [find_task(store, str(t.id)) for t in report.tasks]
    if not tasks:
        raise ForagerError("no task could be made from the sources: see `forager images list`")
    return tasks


def _select_tasks(
    store: Store, kind: TaskKind | None, image: int | None, refs: list[str] | None
) -> list[Task]:
    if refs:
        return [find_task(store, ref) for ref in refs]
    tasks = store.list_tasks(kind=kind, image_id=image, status=TaskStatus.VERIFIED)
    if not tasks:
        raise ForagerError(
            "no verified task matches: make some with `forager tasks mutate` or `tasks import`"
        )
    return tasks
