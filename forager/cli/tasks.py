"""``forager tasks``: mutate-fix and issue-fix tasks — generate, import, mine, verify, list, export."""

from __future__ import annotations

import statistics
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from core.errors import ForagerError
from core.progress import ProgressEvent
from envs.grading import default_test_files, pytest_base
from envs.issue_import import DEFAULT_SOURCE, import_instances
from envs.mine import MineReport
from envs.mine import mine as mine_history
from envs.mutate import OPERATORS
from envs.mutate_fix import MutateOptions, MutateReport, generate
from envs.swebench import (
    PYTEST_LOG_PARSER,
    Instance,
    eval_script,
    read_instances,
    repo_name,
    swesmith_record,
    write_instances,
    write_records,
)
from envs.tasks import Verification, verify
from forager.cli.images import CABundleOption
from forager.cli.output import (
    BackendOption,
    JsonOption,
    console,
    error,
    errors,
    find_image,
    find_task,
    image_dir,
    open_backend,
    open_store,
    print_json,
    progress_display,
    settings,
)
from images.builder import BuildOptions, ImageBuilder
from images.engine import connect
from images.proxy import NetworkSettings
from images.sources import parse_source, read_source_file
from storage import Image, ImageStatus, Store, Task, TaskKind, TaskStatus

app = typer.Typer(
    help="Generate, import, mine and verify mutate-fix and issue-fix tasks.", no_args_is_help=True
)


@app.command()
def mutate(
    ctx: typer.Context,
    images: Annotated[
        list[str] | None,
        typer.Argument(metavar="IMAGE...", help="Image ids or tags. Default: every ready image."),
    ] = None,
    max_tasks: Annotated[int, typer.Option("--max", min=1, help="Tasks per image.")] = 10,
    operators: Annotated[
        str | None, typer.Option(help=f"Comma-separated operators (default all): {', '.join(OPERATORS)}.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed picks the same mutants.")] = 0,
    backend: BackendOption = "docker",
    json: JsonOption = False,
) -> None:
    """Inject bugs into functions the tests cover; keep those the covering tests catch.

    An image that cannot give tasks (no stable passing test, tests that execute none of its code, a
    coverage run that fails) is reported and skipped; the exit code is 1 when no image could.
    """
    store = open_store(ctx)
    chosen = tuple(op.strip() for op in operators.split(",")) if operators else None
    options = MutateOptions(max_tasks=max_tasks, operators=chosen, seed=seed)
    if chosen and (unknown := sorted(set(chosen) - set(OPERATORS))):
        raise typer.BadParameter(
            f"unknown {unknown}: choose from {', '.join(OPERATORS)}", param_hint="--operators"
        )
    where = open_backend(backend)
    reports: list[MutateReport] = []
    skipped: dict[str, str] = {}
    with progress_display(transient=False) as progress:
        for image in _images(store, images):
            cache = image_dir(ctx, image)
            try:
                reports.append(generate(where, store, image, options, cache_dir=cache, progress=progress))
            except ForagerError as exc:
                skipped[image.tag] = str(exc)
    if json:
        print_json([*map(_report_json, reports), *({"image": t, "error": e} for t, e in skipped.items())])
    else:
        if reports:
            _print_reports(reports)
        for tag, reason in skipped.items():
            errors.print(f"{escape(tag)}: skipped: {escape(reason)}", highlight=False)
    if not reports:
        raise typer.Exit(1)


def _print_reports(reports: list[MutateReport]) -> None:
    table = Table("image", "candidates", "validated", "yield", "tests run / task", box=None)
    for report in reports:
        candidates = sum(s.candidates for s in report.stats.values())
        validated = sum(s.validated for s in report.stats.values())
        runs = [n for s in report.stats.values() for n in s.executions]
        table.add_row(
            escape(report.image), str(candidates), str(validated),
            f"{100 * validated / candidates:.0f}%" if candidates else "-",
            f"{statistics.median(runs):.0f} (suite {report.suite_size})" if runs else "-",
        )  # fmt: skip
    console.print(table)


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(metavar="FILE.jsonl", help="SWE-bench instances, one JSON per line.")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            help="Where to clone an instance's repo from; {repo} is its owner/name. Default: the "
            f"instance's image_source when it has one (as exported), else {DEFAULT_SOURCE}.",
            show_default=False,
        ),
    ] = None,
    ca_bundle: CABundleOption = None,
    backend: BackendOption = "docker",
    json: JsonOption = False,
) -> None:
    """Import SWE-bench instances: build the image at each base_commit, verify the gold patch, store.

    Instances exported by Forager with a setup_patch become mutate-fix tasks.
    """
    instances = read_instances(path)
    store = open_store(ctx)
    client = connect(timeout=3600)
    options = BuildOptions(network=NetworkSettings.from_environment(ca_bundle))
    with progress_display(transient=False) as progress:
        builder = ImageBuilder(client, store, settings(ctx).home, options, progress)
        results = import_instances(
            builder, store, open_backend(backend), instances, source=source, progress=progress
        )
    if json:
        print_json([result.__dict__ for result in results])
        return
    for result in results:
        console.print(
            f"{escape(result.instance_id)}: {result.status} ({escape(result.reason)})", highlight=False
        )


@app.command()
def mine(
    ctx: typer.Context,
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SOURCE...", help="Git URLs[@REF] or local repositories[@REF].", show_default=False
        ),
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="One SOURCE per line (# comments).")
    ] = None,
    max_tasks: Annotated[int, typer.Option("--max", min=1, help="Tasks to make at most, per source.")] = 10,
    max_commits: Annotated[int, typer.Option(min=1, help="Commits of history to look at, per source.")] = 200,
    since: Annotated[
        str | None, typer.Option(help="Oldest commit to look at: a date (YYYY-MM-DD) or a ref (excluded).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Newest commit to look at: a date or a ref.")] = None,
    retry_rejected: Annotated[
        bool, typer.Option("--retry-rejected", help="Try again the candidates earlier runs rejected.")
    ] = False,
    layers: Annotated[
        bool,
        typer.Option(
            "--layers/--build-each",
            help="Reuse one install across commits whose installs are planned alike (checked out over it, "
            "install steps run again), or build an image per commit.",
        ),
    ] = True,
    ca_bundle: CABundleOption = None,
    backend: BackendOption = "docker",
    json: JsonOption = False,
) -> None:
    """Mine issue-fix tasks from history: commits that fix code and add tests failing without the fix.

    Resumable: tasks already stored and candidates an earlier run rejected are not tried again. Ends
    with a table per source (candidates, tried, tasks, builds, why skipped); exit code 1 when a source
    could not be mined at all.
    """
    specs = [parse_source(text) for text in sources or []]
    if from_file:
        specs += read_source_file(from_file)
    if not specs:
        raise typer.BadParameter("name at least one SOURCE, or --from-file FILE", param_hint="SOURCE")
    store = open_store(ctx)
    options = BuildOptions(network=NetworkSettings.from_environment(ca_bundle))
    reports: list[MineReport] = []
    failures: dict[str, str] = {}
    with progress_display(transient=False) as progress:
        builder = ImageBuilder(connect(timeout=3600), store, settings(ctx).home, options, progress)
        runner = open_backend(backend)
        for spec in specs:
            try:
                report = mine_history(
                    builder, runner, store, spec, max_tasks=max_tasks, max_commits=max_commits,
                    since=since, until=until, retry_rejected=retry_rejected, reuse_environments=layers,
                    progress=progress,
                )  # fmt: skip
            except ForagerError as exc:
                failures[spec.text] = str(exc)
                continue
            reports.append(report)
    if json:
        print_json(
            {
                "sources": [_mine_json(report) for report in reports]
                + [{"source": text, "error": reason} for text, reason in failures.items()],
                "total": _mine_totals(reports),
            }
        )
    else:
        _print_mine_table(reports, failures)
    for reason in failures.values():
        error(reason)
    if failures:
        raise typer.Exit(1)


def _mine_json(report: MineReport) -> dict[str, object]:
    return {
        "source": report.source,
        "tasks": [task.instance_id for task in report.tasks],
        "made": report.made,
        "candidates": report.candidates,
        "tried": report.tried,
        "rejected_before": report.rejected_before,
        "builds": report.built,
        "layers": report.layered,
        "builds_per_task": report.builds_per_task,
        "skipped": [{"commit": s.sha, "reason": s.reason} for s in report.skipped],
    }


def _mine_totals(reports: list[MineReport]) -> dict[str, object]:
    made = sum(len(report.made) for report in reports)
    built = sum(report.built for report in reports)
    return {
        "candidates": sum(report.candidates for report in reports),
        "tried": sum(report.tried for report in reports),
        "tasks": sum(len(report.tasks) for report in reports),
        "made": made,
        "builds": built,
        "layers": sum(report.layered for report in reports),
        "builds_per_task": built / made if made else None,
    }


def _print_mine_table(reports: list[MineReport], failures: dict[str, str]) -> None:
    table = Table(
        "source",
        Column("candidates", justify="right"),
        Column("tried", justify="right"),
        Column("tasks", justify="right"),
        Column("new", justify="right"),
        Column("builds", justify="right"),
        Column("layers", justify="right"),
        "why skipped",
        title="mined",
    )
    for report in reports:
        why = Counter(skipped.why for skipped in report.skipped)
        if report.rejected_before:
            why["rejected by an earlier run"] = report.rejected_before
        table.add_row(
            escape(report.source),
            str(report.candidates),
            str(report.tried),
            str(len(report.tasks)),
            str(len(report.made)),
            str(report.built),
            str(report.layered),
            escape("\n".join(f"{count}: {reason}" for reason, count in why.most_common())),
        )
    for text, reason in failures.items():
        table.add_row(escape(text), "", "", "", "", "", "", f"[red]{escape(reason)}[/]")
    console.print(table)
    totals = _mine_totals(reports)
    per_task = totals["builds_per_task"]
    console.print(
        f"{totals['tasks']} task(s), {totals['made']} new, from {totals['tried']} of {totals['candidates']} "
        f"candidates; {totals['builds']} image build(s), {totals['layers']} layer(s)"
        + (f", {per_task:.2f} per new task" if isinstance(per_task, float) else ""),
        highlight=False,
    )
    for report in reports:
        for skipped in report.skipped:
            console.print(f"  skipped {skipped.sha[:12]}: {escape(skipped.reason)}", highlight=False)


@app.command()
def validate(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(metavar="TASK...", help="Task ids or instance ids.", show_default=False),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every verified task in the store.")] = False,
    backend: BackendOption = "docker",
    json: JsonOption = False,
) -> None:
    """Grade tasks' gold patches and unmodified starts again, in fresh environments.

    A task verifies when its gold patch resolves it and its start does not. The exit code is 1 when
    one does not; the store is left as it is.
    """
    store = open_store(ctx)
    if all_ == bool(refs):
        raise typer.BadParameter("name the tasks, or give --all", param_hint="TASK...")
    tasks = (
        store.list_tasks(status=TaskStatus.VERIFIED)
        if all_
        else [find_task(store, ref) for ref in refs or []]
    )
    where = open_backend(backend)
    results: list[tuple[Task, Verification | str]] = []
    with progress_display() as progress:
        for number, task in enumerate(tasks, 1):
            progress(
                ProgressEvent("validate", f"{number}/{len(tasks)}", task.instance_id, number - 1, len(tasks))
            )
            try:
                results.append((task, verify(where, task, task.image)))
            except ForagerError as exc:  # its image is gone, its environment cannot start: the next one
                results.append((task, str(exc)))
    if json:
        print_json([_verification_json(task, outcome) for task, outcome in results])
    else:
        table = Table(Column("task", overflow="fold"), "gold patch", "unmodified start", "verifies", box=None)
        for task, outcome in results:
            if isinstance(outcome, str):
                table.add_row(escape(task.instance_id), "-", "-", f"[red]error:[/] {escape(outcome)}")
            else:
                verifies = "yes" if outcome.ok else "[red]no[/]"
                table.add_row(escape(task.instance_id), outcome.gold.status, outcome.start.status, verifies)
        console.print(table)
        ok = sum(isinstance(outcome, Verification) and outcome.ok for _, outcome in results)
        console.print(f"{ok} of {len(results)} task(s) verify", highlight=False)
    if not all(isinstance(outcome, Verification) and outcome.ok for _, outcome in results):
        raise typer.Exit(1)


def _verification_json(task: Task, outcome: Verification | str) -> dict[str, object]:
    if isinstance(outcome, str):
        return {"task": task.instance_id, "ok": False, "error": outcome}
    return {
        "task": task.instance_id,
        "ok": outcome.ok,
        "gold": outcome.gold.to_json(),
        "start": outcome.start.to_json(),
    }


@app.command("list")
def list_(
    ctx: typer.Context,
    kind: Annotated[TaskKind | None, typer.Option(help="Only this kind.")] = None,
    image: Annotated[int | None, typer.Option(help="Only tasks of this image id.")] = None,
    status: Annotated[TaskStatus | None, typer.Option(help="Only this status.")] = None,
    json: JsonOption = False,
) -> None:
    """List the tasks in the store."""
    tasks = open_store(ctx).list_tasks(kind=kind, image_id=image, status=status)
    if json:
        print_json([_task_json(task) for task in tasks])
        return
    table = Table("id", "instance", "kind", "status", "F2P", "P2P", box=None)
    for task in tasks:
        table.add_row(
            str(task.id), escape(task.instance_id), task.kind.value, task.status.value,
            str(len(task.fail_to_pass)), str(len(task.pass_to_pass)),
        )  # fmt: skip
    console.print(table)


@app.command()
def show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(metavar="TASK")], json: JsonOption = False
) -> None:
    """Show one task: statement, tests, patches."""
    task = find_task(open_store(ctx), ref)
    if json:
        print_json(_task_json(task, full=True))
        return
    console.print(
        f"[bold]{escape(task.instance_id)}[/]  {task.kind.value}, {task.status.value}, image {task.image.tag}"
    )
    console.print(escape(task.problem_statement), highlight=False)
    console.print(
        f"FAIL_TO_PASS ({len(task.fail_to_pass)}): {', '.join(task.fail_to_pass[:5])}", highlight=False
    )
    console.print(f"PASS_TO_PASS: {len(task.pass_to_pass)} tests", highlight=False)
    console.print("gold patch:", style="bold")
    console.print(escape(task.gold_patch), highlight=False)


class ExportFormat(StrEnum):
    SWEBENCH = "swebench"
    SWESMITH = "swesmith"


@app.command()
def export(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="FILE.jsonl")],
    kind: Annotated[
        TaskKind | None, typer.Option(help="Only tasks of this kind.", show_default=False)
    ] = None,
    format: Annotated[
        ExportFormat,
        typer.Option("--format", help="swebench: SWE-bench instances; swesmith: mutate-fix tasks."),
    ] = ExportFormat.SWEBENCH,
) -> None:
    """Write verified tasks as SWE-bench JSONL, which `forager tasks import` reads back.

    Every line has SWE-bench's fields (repo is owner/name whenever the source has one), what SWE-bench
    5's make_test_spec needs to evaluate it in Forager's image (image, eval_script, log_parser,
    eval_type), image_source (what the image was built from) and, for mutate-fix tasks, setup_patch: the
    patch that makes the task's start from base_commit, which SWE-bench's own harness does not apply
    (use --kind issue_fix for files meant for it). `--format swesmith` writes the mutate-fix tasks in
    SWE-smith's convention instead: patch is the bug-introducing diff, image_name the image. Missing
    folders are created.
    """
    if format == ExportFormat.SWESMITH:
        if kind == TaskKind.ISSUE_FIX:
            raise ForagerError("--format swesmith writes mutate-fix tasks: drop --kind issue_fix")
        kind = TaskKind.MUTATE_FIX
    tasks = open_store(ctx).list_tasks(kind=kind, status=TaskStatus.VERIFIED)
    instances = [_instance(task) for task in tasks]
    if format == ExportFormat.SWESMITH:
        commits = [task.image.repository.commit or "" for task in tasks]
        write_records(path, [swesmith_record(i, commit=c) for i, c in zip(instances, commits, strict=True)])
    else:
        write_instances(path, instances)
    console.print(f"{len(tasks)} task(s) written to {path}", highlight=False)


def _images(store: Store, refs: list[str] | None) -> list[Image]:
    if not refs:
        images = store.list_images(status=ImageStatus.READY)
        if not images:
            raise ForagerError("no ready image in the store: build some with `forager images build`")
        return images
    return [find_image(store, ref) for ref in refs]


def _instance(task: Task) -> Instance:
    repository = task.image.repository
    test_ids = [*task.fail_to_pass, *task.pass_to_pass]
    return Instance(
        repo=repo_name(repository.source, repository.name, task.meta),
        instance_id=task.instance_id,
        base_commit=task.meta.get("base_commit") or task.image.repository.commit or "",
        patch=task.gold_patch,
        test_patch=task.test_patch,
        problem_statement=task.problem_statement,
        hints_text=task.meta.get("hints_text", ""),
        created_at=task.meta.get("created_at", "") or f"{task.created_at:%Y-%m-%dT%H:%M:%SZ}",
        version=task.meta.get("version", ""),
        FAIL_TO_PASS=tuple(task.fail_to_pass),
        PASS_TO_PASS=tuple(task.pass_to_pass),
        environment_setup_commit=task.meta.get("environment_setup_commit", ""),
        setup_patch=task.setup_patch,
        image_source=repository.source,
        image=task.image.tag,
        eval_script=eval_script(
            workdir="/repo",
            pytest_words=pytest_base(task.image.test_command or "python -m pytest"),
            test_ids=test_ids,
            test_files=default_test_files(task.fail_to_pass, task.pass_to_pass, task.test_patch),
            test_patch=task.test_patch,
        ),
        log_parser=PYTEST_LOG_PARSER,
        eval_type="pass_and_fail",
    )


def _task_json(task: Task, full: bool = False) -> dict[str, object]:
    data: dict[str, object] = {
        "id": task.id, "instance_id": task.instance_id, "kind": task.kind.value, "status": task.status.value,
        "image": task.image.tag, "fail_to_pass": task.fail_to_pass, "pass_to_pass": task.pass_to_pass,
        "meta": task.meta, "created_at": task.created_at,
    }  # fmt: skip
    if full:
        data.update(
            problem_statement=task.problem_statement, setup_patch=task.setup_patch,
            gold_patch=task.gold_patch, test_patch=task.test_patch,
        )  # fmt: skip
    return data


def _report_json(report: MutateReport) -> dict[str, object]:
    return {
        "image": report.image,
        "suite_size": report.suite_size,
        "tasks": [task.instance_id for task in report.tasks],
        "operators": {name: stats.__dict__ for name, stats in report.stats.items()},
    }
