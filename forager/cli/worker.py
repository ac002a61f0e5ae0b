"""``forager worker``: run queued episodes (``forager forage --enqueue``) until stopped or none are left."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from envs.backend import Backend
from envs.pool import WarmPool
from forager.cli.forage import ModelOption, NameOption
from forager.cli.output import (
    BackendOption,
    JsonOption,
    console,
    errors,
    open_backend,
    open_store,
    print_json,
)
from forager.model import ModelClient, ModelConfig
from forager.worker import Worker, WorkerOptions

#: Exit status after SIGTERM or Ctrl-C (128 + the signal): the worker stopped before the queue was empty,
#: so an Indexed Job runs the index again rather than counting it complete.
_SIGNAL_EXIT = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}


def worker(
    ctx: typer.Context,
    model: ModelOption,
    action_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Claim only items of this action format (function_calling or cwm_text). Default: any.",
        ),
    ] = None,
    model_name: NameOption = None,
    backend: BackendOption = "docker",
    warm: Annotated[
        int,
        typer.Option(
            min=0, help="Keep this many environments of the next items' images started (0: no warm pool)."
        ),
    ] = 0,
    until_empty: Annotated[
        bool, typer.Option("--until-empty", help="Exit 0 once no item is queued or leased.")
    ] = False,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            min=1,
            metavar="SECONDS",
            help="How long a claim holds without a heartbeat: a killed worker's item runs again after it.",
        ),
    ] = 120.0,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds the episode under way may take to finish after SIGTERM."),
    ] = 25.0,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between looks at an empty queue.")] = 5.0,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature. Default: the server's.", show_default=False)
    ] = None,
    json: JsonOption = False,
) -> None:
    """Claim queued episodes one at a time, run them, store them; many workers may share one queue.

    SIGTERM stops claiming: the episode under way gets --grace seconds to finish and be stored, else its
    item is given back for another worker; a second SIGTERM gives it back at once. Exit status: 0 when
    --until-empty found no work left, 128+signal when stopped.
    """
    if action_format not in (None, "function_calling", "cwm_text"):
        raise typer.BadParameter("use function_calling or cwm_text", param_hint="--format")
    store = open_store(ctx)
    where: Backend = open_backend(backend, store)
    if warm:
        where = WarmPool(where, warm)
    options = WorkerOptions(
        lease_seconds=lease, action_format=action_format, until_empty=until_empty, poll_seconds=poll,
        grace=grace,
    )  # fmt: skip
    logging.basicConfig(level=logging.WARNING)
    received: list[signal.Signals] = []

    async def go():
        async with ModelClient(
            ModelConfig(base_url=model, model=model_name, temperature=temperature)
        ) as client:
            name = model_name or (await client.models())[0]
            runner = Worker(store, where, client, model_name=name, options=options, report=_say)
            loop = asyncio.get_running_loop()
            for signum in _SIGNAL_EXIT:
                loop.add_signal_handler(signum, lambda s=signum: (received.append(s), runner.stop()))
            _say(f"worker {options.name} serving {name} on {where.kind}")
            return await runner.run()

    try:
        summary = asyncio.run(go())
    finally:
        where.close()
        store.close()
    if json:
        print_json(summary.__dict__)
    else:
        console.print(
            f"{summary.done} done, {summary.failed} failed, {summary.retried} retried, "
            f"{summary.released} given back, {summary.lost} lost",
            highlight=False,
        )
    if received:
        raise typer.Exit(_SIGNAL_EXIT[received[0]])


def _say(message: str) -> None:
    errors.print(message, highlight=False, markup=False)
