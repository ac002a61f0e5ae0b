"""``forager doctor``."""

from __future__ import annotations

import typer
from rich.markup import escape

from forager.cli.images import CABundleOption
from forager.cli.output import JsonOption, console, print_json, settings
from forager.doctor import run_checks

_MARKS = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}


def doctor(ctx: typer.Context, ca_bundle: CABundleOption = None, json: JsonOption = False) -> None:
    """Check the Docker engine, base image, database and CA bundle; say what is missing and how to fix it."""
    checks = run_checks(settings(ctx), ca_bundle)
    if json:
        print_json([check.__dict__ for check in checks])
    else:
        for check in checks:
            console.print(
                f"{_MARKS[check.status]} [bold]{check.name:<14}[/] {escape(check.detail)}", highlight=False
            )
            if check.status != "ok":
                console.print(f"  {'':<14} → {escape(check.fix)}", highlight=False)
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)
