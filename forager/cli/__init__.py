"""The ``forager`` command line: one typer app per command group, assembled here."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from core.errors import ForagerError
from forager.cli import db, doctor, envs, export, forage, images, k8s, tasks, traces, view, worker
from forager.cli.episode import episode_list
from forager.cli.output import error
from forager.settings import DEFAULT_HOME, Settings

app = typer.Typer(
    name="forager",
    help="Turn Python repositories into executable Docker environments and farm agent trajectories.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="FORAGER_DB",
            metavar="URL",
            help="SQLAlchemy URL of the store, e.g. postgresql://user:pass@host/forager. "
            "Default: SQLite in the home directory.",
        ),
    ] = None,
    home: Annotated[
        Path,
        typer.Option(
            envvar="FORAGER_HOME", help="Where the embedded database, build logs and artifacts live."
        ),
    ] = DEFAULT_HOME,
) -> None:
    ctx.obj = Settings(home=home, db=db_url)


app.add_typer(images.app, name="images")
app.add_typer(tasks.app, name="tasks")
app.add_typer(traces.app, name="traces")
app.add_typer(forage.episode_app, name="episode")
forage.episode_app.command("list")(episode_list)
app.command("forage")(forage.forage)
app.command("worker")(worker.worker)
app.command("export")(export.export_command)
app.add_typer(db.app, name="db")
app.add_typer(envs.app, name="envs")
app.add_typer(k8s.app, name="k8s")
app.add_typer(forage.serve_app, name="serve")
app.command()(doctor.doctor)
app.command("view")(view.view)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the ``forager`` script: user errors print one line, never a traceback.

    SIGTERM (``kill``, Kubernetes stopping a pod) is handled like Ctrl-C, so long commands get to
    remove their containers before exiting; SIGINT is Ctrl-C even when the shell started us ignoring it.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell without job control starts background commands ignoring SIGINT, and Python then keeps
    # ignoring it: `kill -INT` must still stop a build and remove its containers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app()
    except ForagerError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
