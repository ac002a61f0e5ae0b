"""``forager episode list`` and the episode filters it shares with ``forager db stats``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from core.errors import ForagerError
from forager.cli.output import JsonOption, console, open_store, print_json
from storage import Episode, EpisodeFilter, TaskKind

ModelFilter = Annotated[str | None, typer.Option(help="Only episodes of this model.", show_default=False)]
ResolvedFilter = Annotated[
    bool | None,
    typer.Option("--resolved/--unresolved", help="Only resolved / only graded unresolved episodes."),
]
ExitReasonFilter = Annotated[
    str | None,
    typer.Option(help="Only episodes that ended so (submitted, max_turns ...).", show_default=False),
]
RepositoryFilter = Annotated[
    str | None,
    typer.Option(help="Only tasks of this repository, by name (attrs, owner/name).", show_default=False),
]
KindFilter = Annotated[TaskKind | None, typer.Option("--kind", help="Only tasks of this kind.")]
OperatorFilter = Annotated[
    str | None, typer.Option(help="Only mutate-fix tasks of this operator.", show_default=False)
]
SinceFilter = Annotated[
    datetime | None, typer.Option(help="Only episodes stored at or after this time (UTC unless given).")
]
UntilFilter = Annotated[datetime | None, typer.Option(help="Only episodes stored before this time (UTC).")]


def episode_filter(
    model: str | None = None,
    resolved: bool | None = None,
    exit_reason: str | None = None,
    repository: str | None = None,
    kind: TaskKind | None = None,
    operator: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    task_id: int | None = None,
) -> EpisodeFilter:
    """The filter the command-line options mean; a time without a zone is UTC."""
    try:
        return EpisodeFilter(
            model=model,
            resolved=resolved,
            exit_reason=exit_reason,
            repository=repository,
            task_kind=kind.value if kind else None,
            operator=operator,
            since=_utc(since),
            until=_utc(until),
            task_id=task_id,
        )
    except ValueError as exc:
        raise ForagerError(str(exc)) from exc


def episode_list(
    ctx: typer.Context,
    model: ModelFilter = None,
    resolved: ResolvedFilter = None,
    exit_reason: ExitReasonFilter = None,
    repository: RepositoryFilter = None,
    kind: KindFilter = None,
    operator: OperatorFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    task: Annotated[int | None, typer.Option(help="Only episodes of this task id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Episodes per page.")] = 100,
    after: Annotated[
        str | None,
        typer.Option(help="Start after this episode id (the last of the previous page).", show_default=False),
    ] = None,
    json: JsonOption = False,
) -> None:
    """List stored episodes, oldest first, a page at a time (filters combine)."""
    selection = episode_filter(model, resolved, exit_reason, repository, kind, operator, since, until, task)
    store = open_store(ctx)
    try:
        episodes = store.list_episodes(selection, limit=limit, after=after)
    finally:
        store.close()
    more = episodes[-1].id if len(episodes) == limit else None
    if json:
        print_json({"episodes": [_row(episode) for episode in episodes], "next_after": more})
        return
    if not episodes:
        console.print("no episode matches" if after is None else "no more episodes")
        return
    header = ("id", "created (UTC)", "task", "repository", "model", "exit", "resolved", "steps", "tokens")
    rows = [
        (
            episode.id,
            f"{episode.created_at:%Y-%m-%d %H:%M:%S}",
            episode.task.instance_id,
            episode.task.image.repository.name,
            episode.model,
            episode.exit_reason,
            {True: "yes", False: "no", None: "-"}[episode.resolved],
            str(episode.n_steps),
            str(episode.prompt_tokens + episode.completion_tokens),
        )
        for episode in episodes
    ]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    for row in (header, *rows):  # whole lines, never folded: ids are meant to be copied
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        style = "bold" if row is header else None
        console.print(line, soft_wrap=True, highlight=False, markup=False, style=style)
    if more:
        console.print(f"next page: --after {more}", highlight=False)


def _row(episode: Episode) -> dict[str, Any]:
    return {
        "id": episode.id,
        "created_at": episode.created_at.isoformat(),
        "task": episode.task.instance_id,
        "task_id": episode.task_id,
        "task_kind": episode.task.kind.value,
        "operator": episode.task.operator,
        "repository": episode.task.image.repository.name,
        "model": episode.model,
        "policy": episode.policy,
        "action_format": episode.action_format,
        "status": episode.status.value,
        "exit_reason": episode.exit_reason,
        "resolved": episode.resolved,
        "reward": episode.reward,
        "steps": episode.n_steps,
        "prompt_tokens": episode.prompt_tokens,
        "completion_tokens": episode.completion_tokens,
    }


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
