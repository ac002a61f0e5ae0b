"""``forager db``: the trajectory store's schema and contents."""

from __future__ import annotations

import typer

from forager.cli.output import JsonOption, console, open_store, print_json

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
