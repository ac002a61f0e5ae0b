"""``forager db``: the trajectory store's schema and contents."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from forager.cli.episode import (
    ExitReasonFilter,
    KindFilter,
    ModelFilter,
    OperatorFilter,
    RepositoryFilter,
    ResolvedFilter,
    SinceFilter,
    UntilFilter,
    episode_filter,
)
from forager.cli.output import JsonOption, console, open_store, print_json
from storage import GroupStats

app = typer.Typer(help="The SQL trajectory store: schema migrations and what it holds.", no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Migrate the database to the schema this Forager uses (creates it when it does not exist)."""
    store = open_store(ctx, upgrade=True)
    try:
        console.print(f"{store.url} is at revision {store.schema_revision()} (latest)", highlight=False)
    finally:
        store.close()


@app.command()
def info(ctx: typer.Context, json: JsonOption = False) -> None:
    """Show the database URL, its schema revision and how many rows each table holds."""
    store = open_store(ctx)
    try:
        data = {
            "url": store.url,
            "revision": store.schema_revision(),
            "latest": store.head_revision(),
            "rows": store.counts(),
        }
    finally:
        store.close()
    if json:
        print_json(data)
        return
    console.print(f"database  {data['url']}", highlight=False)
    console.print(f"revision  {data['revision']} (latest {data['latest']})", highlight=False)
    for table, count in data["rows"].items():
        console.print(f"{table:<14}{count:>10}", highlight=False)


@app.command()
def stats(
    ctx: typer.Context,
    model: ModelFilter = None,
    resolved: ResolvedFilter = None,
    exit_reason: ExitReasonFilter = None,
    repository: RepositoryFilter = None,
    kind: KindFilter = None,
    operator: OperatorFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    json: JsonOption = False,
) -> None:
    """What the stored episodes amount to, per repository, task origin (mutate-fix operator, or mined /
    imported issue-fix tasks) and model: tasks, episodes, resolve rate, turns and tokens (median, p90),
    exit reasons."""
    selection = episode_filter(model, resolved, exit_reason, repository, kind, operator, since, until)
    store = open_store(ctx)
    try:
        result = store.stats(selection)
    finally:
        store.close()
    if json:
        print_json(result.to_json())
        return
    if not result.total.episodes:
        console.print("no episode matches")
        return
    console.print(
        "resolved: share of graded episodes; solved: tasks resolved at least once; turns and tokens: "
        "median/p90 per episode",
        style="dim",
    )
    for title, groups in (
        ("all episodes", [result.total]),
        ("per repository", result.by_repository),
        ("per origin (mutate-fix operator, or mined / imported issue-fix tasks)", result.by_origin),
        ("per model", result.by_model),
    ):
        console.print()
        console.print(_table(title, groups))


def _table(title: str, groups: list[GroupStats]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    for name in ("tasks", "solved", "episodes", "resolved", "turns", "tokens"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("exit reasons", overflow="fold")
    for group in groups:
        rate = "-" if group.resolve_rate is None else f"{group.resolve_rate:.1%}"
        reasons = ", ".join(f"{reason} {n}" for reason, n in group.exit_reasons.items())
        table.add_row(
            escape(group.key),
            str(group.tasks),
            str(group.tasks_resolved),
            str(group.episodes),
            rate,
            f"{group.turns_p50}/{group.turns_p90}",
            f"{_thousands(group.tokens_p50)}/{_thousands(group.tokens_p90)}",
            escape(reasons),
        )
    return table


def _thousands(tokens: int | None) -> str:
    return "-" if tokens is None else f"{tokens / 1000:.0f}k" if tokens >= 10_000 else str(tokens)
