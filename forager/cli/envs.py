"""``forager envs``: running episode environments."""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from typing import Annotated

import typer

from forager.cli.output import BackendOption, JsonOption, console, open_backend, print_json

app = typer.Typer(
    help="Running episode environments: clean up containers and pods.", no_args_is_help=True
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# What both engines' label filters take: a key, optionally with one value (no lists, no operators).
_LABEL = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]*(=[^,=\s]*)?$")


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``2h`` or ``1d`` as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 90s, 30m, 2h or 1d")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def parse_label(text: str) -> str:
    """``KEY`` or ``KEY=VALUE``, as given."""
    if not _LABEL.match(text):
        raise typer.BadParameter(f"{text!r} is not a label: use KEY or KEY=VALUE, e.g. forager.episode=ID")
    return text


@app.command()
def gc(
    older_than: Annotated[
        timedelta | None,
        typer.Option(
            "--older-than",
            parser=parse_duration,
            metavar="DURATION",
            help="Also remove those at least this old (e.g. 2h) made from other machines.",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Remove every Forager container, running work included.")
    ] = False,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            parser=parse_label,
            metavar="KEY[=VALUE]",
            help="Only those carrying this label (repeat to require several), e.g. forager.episode=ID.",
        ),
    ] = None,
    backend: BackendOption = "docker",
    json: JsonOption = False,
) -> None:
    """Remove environments (containers or pods; build containers) left by Forager processes that exited.

    Safe while other Forager processes on this machine work: their containers stay.
    Containers of other machines sharing this engine: add --older-than once surely abandoned.
    --label narrows any of these to what carries that label, e.g. one episode's: forager.episode=ID.
    """
    with contextlib.closing(open_backend(backend)) as where:
        removed = where.collect_garbage(older_than=older_than, everything=everything, labels=labels or [])
    if json:
        print_json(
            [
                {
                    "id": r.id,
                    "name": r.name,
                    "kind": r.kind,
                    "age_seconds": r.age.total_seconds(),
                    "reason": r.reason,
                }
                for r in removed
            ]
        )
        return
    for r in removed:
        console.print(
            f"removed {r.name} ({r.kind}, {r.age.total_seconds() / 60:.0f} min old, {r.reason})",
            highlight=False,
        )
    console.print(f"{len(removed)} container(s) removed", highlight=False)
