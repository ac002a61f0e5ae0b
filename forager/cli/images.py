"""``forager images``: repository images and the base image they are layered on."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Annotated

import typer
from docker.errors import ImageNotFound
from rich.markup import escape
from rich.table import Table

from core.errors import ForagerError
from envs.backend import make_backend
from forager.cli.output import (
    JsonOption,
    console,
    find_image,
    open_store,
    print_json,
    progress_display,
    settings,
)
from images.base import BASES, DEFAULT_BASE, DebianBase, base_for_python, ensure_base_image
from images.baseline import unit_of
from images.builder import BuildOptions, BuildResult, ImageBuilder
from images.engine import connect
from images.proxy import NetworkSettings
from images.recipe import InstallRecipe
from images.registry import parse_registry
from images.registry import pull as pull_image
from images.registry import push as push_image
from images.self_image import SELF_IMAGE, build_self_image, find_checkout
from images.sources import SourceSpec, parse_source, read_source_file
from storage import Image, ImageStatus, Store

app = typer.Typer(help="Build, list and inspect repository images.", no_args_is_help=True)

#: The slowest tests ``images show`` names: those worth knowing before choosing what a task runs.
SLOWEST_SHOWN = 3

CABundleOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        help="PEM bundle that build steps trust (for TLS-intercepting proxies). "
        "Default: $SSL_CERT_FILE, $REQUESTS_CA_BUNDLE, $PIP_CERT or the system bundle.",
    ),
]
RefArgument = Annotated[str, typer.Argument(metavar="REF", help="Image id (as listed) or tag.")]


@app.command()
def base(
    ctx: typer.Context,
    mirror: Annotated[
        str | None, typer.Option(help="Debian mirror URL. Default: the one this host's apt uses.")
    ] = None,
    ca_bundle: CABundleOption = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even if the image exists.")] = False,
    python: Annotated[
        str,
        typer.Option(help=f"CPython line: {', '.join(f'{b.python} ({b.tag})' for b in BASES)}."),
    ] = DEFAULT_BASE.python,
    json: JsonOption = False,
) -> None:
    """Make a shared base image (Debian minbase + Python, pip, venv, git, build tools, uv).

    Uses debootstrap and docker import, so no container registry is needed. Skips the work when the
    image already exists. `images build` makes a missing base itself when a project needs it.
    """
    chosen = _base_for(python)
    network = NetworkSettings.from_environment(ca_bundle)
    client = connect()
    log_dir = settings(ctx).logs / chosen.log_folder
    with progress_display() as progress:
        image = ensure_base_image(
            client, network, base=chosen, mirror=mirror, log_dir=log_dir, rebuild=rebuild, progress=progress
        )
    if json:
        print_json({"tag": image.tag, "id": image.id, "size_bytes": image.size_bytes, "built": image.built})
        return
    verb = "built" if image.built else "already present"
    console.print(
        f"{image.tag} {verb} ({image.size_bytes / 2**20:.0f} MiB, {image.id[7:19]})", highlight=False
    )


def _base_for(python: str) -> DebianBase:
    base = base_for_python(python)
    if base is None:
        lines = ", ".join(b.python for b in BASES)
        raise typer.BadParameter(f"Forager's bases give Python {lines}", param_hint="--python")
    return base


@app.command("self")
def self_(
    ctx: typer.Context,
    tag: Annotated[str, typer.Option(help="Tag of the image.")] = SELF_IMAGE,
    checkout: Annotated[
        Path | None, typer.Option(help="The Forager checkout to install. Default: the one running.")
    ] = None,
    ca_bundle: CABundleOption = None,
    json: JsonOption = False,
) -> None:
    """Build Forager's own worker image (for `forager k8s`) from the checkout, on the base image.

    Push it where the cluster pulls from (`docker push`), then pass it to `forager k8s render --image`.
    """
    client = connect()
    with progress_display() as progress:
        image = build_self_image(
            client, find_checkout(checkout), NetworkSettings.from_environment(ca_bundle), tag=tag,
            log_dir=settings(ctx).logs / "worker-image", progress=progress,
        )  # fmt: skip
    if json:
        print_json(image.__dict__)
        return
    size = f"{image.size_bytes / 2**20:.0f} MiB"
    console.print(f"{image.tag} built ({size}, {image.id[7:19]})", highlight=False)


@app.command()
def build(
    ctx: typer.Context,
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SOURCE...",
            help="git URL[@REF], local PATH[@REF], or pypi:NAME[==VERSION].",
            show_default=False,
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="One SOURCE per line, or SWE-bench JSONL (repo + base_commit)."),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Builds at once.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds for one build, tests excluded.")] = 1800,
    test_timeout: Annotated[float, typer.Option(help="Seconds for one baseline test run.")] = 900,
    per_test_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds for one baseline test (a hanging test fails); 0: none.")
    ] = 120,
    base_image: Annotated[
        str | None,
        typer.Option(
            "--base", help="Base image to layer on. Default: Forager's base for the Python the project needs."
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(help="CPython line to build on (3.11 or 3.13) instead of the one the project needs."),
    ] = None,
    ca_bundle: CABundleOption = None,
    min_pass_ratio: Annotated[
        float, typer.Option(min=0, max=1, help="Share of run tests that must pass for 'ready'.")
    ] = 0.8,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build even if a ready image exists.")] = False,
    resolve_newest: Annotated[
        bool,
        typer.Option(
            "--resolve-newest",
            help="Install the newest releases of what the project does not pin, instead of the releases "
            "out at its commit's date.",
        ),
    ] = False,
    json: JsonOption = False,
) -> None:
    """Build executable images of repositories: install, verify by running, record a test baseline.

    What a lock file (uv.lock, poetry.lock, pdm.lock, pylock.toml, Pipfile.lock, pinned constraints)
    pins is installed at those versions; everything else resolves as of the commit's date.
    """
    specs: list[SourceSpec] = [parse_source(text) for text in sources or []]
    if from_file:
        specs += read_source_file(from_file)
    if not specs:
        raise typer.BadParameter("name at least one SOURCE, or --from-file FILE", param_hint="SOURCE")
    if base_image and python:
        raise typer.BadParameter("--base has its own Python: pass --base or --python", param_hint="--python")
    if python:
        _base_for(python)
    options = BuildOptions(
        base_image=base_image,
        python=python,
        network=NetworkSettings.from_environment(ca_bundle),
        timeout=timeout,
        test_timeout=test_timeout,
        per_test_timeout=per_test_timeout,
        min_pass_ratio=min_pass_ratio,
        rebuild=rebuild,
        resolve_newest=resolve_newest,
    )
    store = open_store(ctx)
    with progress_display(transient=False) as progress:
        builder = ImageBuilder(connect(timeout=3600), store, settings(ctx).home, options, progress)
        results = builder.build_many(specs, jobs)
    if json:
        print_json([_result_json(result) for result in results])
    else:
        console.print(_results_table(results))
    if not any(result.status == ImageStatus.READY for result in results):
        raise typer.Exit(1)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[ImageStatus | None, typer.Option(help="Only images with this status.")] = None,
    name: Annotated[str | None, typer.Option(help="Only this repository (owner__repo, pypi__name).")] = None,
    json: JsonOption = False,
) -> None:
    """List the images in the store."""
    images = open_store(ctx).list_images(status=status, name=name)
    if json:
        print_json([_image_json(image) for image in images])
        return
    table = Table("id", "tag", "status", "tests", "unique", "built", box=None)
    for image in images:
        table.add_row(
            str(image.id),
            escape(image.tag),
            _status(image.status, image.failure_class),
            f"{image.tests_passed}/{image.tests_total}",
            _size(image.unique_bytes),
            f"{image.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command()
def show(ctx: typer.Context, ref: RefArgument, json: JsonOption = False) -> None:
    """Show one image: its recipe, test command, baseline summary and where its log is."""
    image = find_image(open_store(ctx), ref)
    if json:
        print_json(_image_json(image, full=True))
        return
    outcomes = list(image.baseline.values())
    console.print(f"[bold]{escape(image.tag)}[/]  {_status(image.status, image.failure_class)}")
    console.print(
        f"source     {escape(image.repository.source)} @ {image.repository.commit}", highlight=False
    )
    console.print(f"tests      {image.test_command}", highlight=False)
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in ("passed", "failed", "error", "skipped"))
    console.print(f"baseline   {counts}, {len(image.flaky)} flaky", highlight=False)
    if image.partial:
        files = len({unit_of(test) for test in image.baseline})
        console.print(
            f"partial    the baseline has the tests of {files} test file(s) of the suite: its runs stopped "
            "before the rest (the time budget, or an internal error of pytest; see the build log)",
            highlight=False,
            soft_wrap=True,
        )
    if image.durations:
        slowest = sorted(image.durations.items(), key=lambda item: (-item[1], item[0]))[:SLOWEST_SHOWN]
        shown = ", ".join(f"{escape(test)} {seconds:.2f} s" for test, seconds in slowest)
        console.print(f"slowest    {shown}", highlight=False, soft_wrap=True)
    console.print(f"size       {_size(image.size_bytes)} ({_size(image.unique_bytes)} of its own)")
    if image.build_seconds is not None:
        console.print(f"build      {image.build_seconds:.0f} s, log {image.log_path}", highlight=False)
    if image.recipe:
        recipe = InstallRecipe.from_json(image.recipe)
        pinned = f"pinned by {recipe.lock_file}" if recipe.lock_file else "no lock file"
        when = recipe.install_env.get("UV_EXCLUDE_NEWER")
        rest = f"the rest as of {when}" if when else "the rest at their newest releases"
        console.print(f"versions   {pinned}; {rest}", highlight=False)
        console.print("recipe")
        for step in recipe.steps:
            console.print(f"  [dim]# {escape(step.why)}[/]\n  {escape(step.run)}", highlight=False)
    if image.log_tail and image.status == ImageStatus.FAILED:
        console.print("log tail", style="bold")
        console.print(escape(image.log_tail), highlight=False)


@app.command()
def rm(ctx: typer.Context, refs: Annotated[list[str], typer.Argument(metavar="REF...")]) -> None:
    """Remove images: the Docker image and its record (refused while tasks use it)."""
    store = open_store(ctx)
    client = connect()
    for ref in refs:
        image = find_image(store, ref)
        store.delete_image(image.id)
        with contextlib.suppress(ImageNotFound):
            client.images.remove(image.tag, force=True)
        console.print(f"removed {escape(image.tag)}")


@app.command()
def prune(ctx: typer.Context) -> None:
    """Remove what interrupted builds left: build containers, dangling image layers, scratch folders."""
    client = connect()
    containers = [r for r in make_backend("docker", client=client).collect_garbage() if r.kind == "build"]
    reclaimed = client.images.prune(filters={"dangling": True}).get("SpaceReclaimed") or 0
    scratch = settings(ctx).home / "tmp"
    folders = list(scratch.iterdir()) if scratch.is_dir() else []
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    console.print(
        f"removed {len(containers)} build container(s), {len(folders)} scratch folder(s), "
        f"{_size(reclaimed)} of dangling layers"
    )


@app.command()
def push(
    ctx: typer.Context,
    registry: Annotated[
        str,
        typer.Option(
            "--registry", metavar="HOST[:PORT]/PREFIX", help="Where to push, e.g. 127.0.0.1:5000/forager."
        ),
    ],
    refs: Annotated[
        list[str] | None,
        typer.Argument(metavar="[IMAGE...]", help="Image ids or tags. Default: every ready image."),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Push images to a registry (layers it has already are not sent) and record where each went.

    Kubernetes workers then run the recorded reference, and `forager images pull` fetches it on machines
    that did not build it.
    """
    store = open_store(ctx)
    registry = parse_registry(registry)
    images = _chosen(store, refs)
    client = connect(timeout=3600)
    results = []
    with progress_display(transient=False) as progress:
        for image in images:
            results.append(push_image(client, store, image, registry, progress=progress))
    if json:
        print_json([result.__dict__ for result in results])
        return
    table = Table("tag", "reference", "layers sent", "already there", "seconds", box=None)
    for r in results:
        counts = (str(r.layers_pushed), str(r.layers_skipped), f"{r.seconds:.1f}")
        table.add_row(escape(r.tag), escape(r.reference), *counts)
    console.print(table)


@app.command()
def pull(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(metavar="[IMAGE...]", help="Image ids or tags. Default: every pushed image."),
    ] = None,
) -> None:
    """Fetch pushed images onto this machine's engine under their own tags (for workers here)."""
    store = open_store(ctx)
    images = _chosen(store, refs, pushed=True)
    client = connect(timeout=3600)
    with progress_display(transient=False) as progress:
        for image in images:
            pull_image(client, store, image, progress=progress)
    console.print(f"{len(images)} image(s) on this engine", highlight=False)


def _chosen(store: Store, refs: list[str] | None, *, pushed: bool = False) -> list[Image]:
    if refs:
        return [find_image(store, ref) for ref in refs]
    images = [i for i in store.list_images(status=ImageStatus.READY) if i.registry_ref or not pushed]
    if not images:
        raise ForagerError(
            f"no {'pushed' if pushed else 'ready'} image in {store.url}: see `forager images list`"
        )
    return images


def _status(status: ImageStatus, failure_class: str | None) -> str:
    if status == ImageStatus.READY:
        return "[green]ready[/]"
    return f"[red]{status.value}[/]" + (f" ({failure_class})" if failure_class else "")


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.0f} MiB" if value >= 2**20 else f"{value / 2**10:.0f} KiB"


def _results_table(results: list[BuildResult]) -> Table:
    table = Table("repository", "status", "tests", "time", "unique", "reason", box=None)
    for r in results:
        status = _status(r.status, r.failure_class) + (" (cached)" if r.cached else "")
        table.add_row(
            escape(r.name), status, f"{r.tests_passed}/{r.tests_total}", f"{r.seconds:.0f} s",
            _size(r.unique_bytes), escape(r.reason),
        )  # fmt: skip
    return table


def _result_json(r: BuildResult) -> dict[str, object]:
    return {
        "source": r.source, "name": r.name, "status": r.status.value, "failure_class": r.failure_class,
        "reason": r.reason, "tag": r.tag, "commit": r.commit, "tests_passed": r.tests_passed,
        "tests_total": r.tests_total, "seconds": round(r.seconds, 2), "size_bytes": r.size_bytes,
        "unique_bytes": r.unique_bytes, "log_path": str(r.log_path) if r.log_path else None,
        "cached": r.cached,
    }  # fmt: skip


def _image_json(image: Image, full: bool = False) -> dict[str, object]:
    data: dict[str, object] = {
        "id": image.id, "tag": image.tag, "source": image.repository.source, "name": image.repository.name,
        "commit": image.repository.commit, "status": image.status.value, "failure_class": image.failure_class,
        "tests_passed": image.tests_passed, "tests_total": image.tests_total, "size_bytes": image.size_bytes,
        "unique_bytes": image.unique_bytes, "build_seconds": image.build_seconds,
        "test_command": image.test_command, "log_path": image.log_path, "created_at": image.created_at,
        "registry_ref": image.registry_ref, "partial": image.partial,
    }  # fmt: skip
    if full:
        data.update(
            recipe=image.recipe, baseline=image.baseline, flaky=image.flaky, durations=image.durations,
            log_tail=image.log_tail,
        )  # fmt: skip
    return data
