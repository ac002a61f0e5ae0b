"""``forager k8s``: a foraging run as an Indexed Job of workers — render, apply, status, logs, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.errors import ForagerError
from forager.cli.output import JsonOption, console, open_store, print_json
from forager.k8s import Cluster, ManifestOptions, render, run_status, to_yaml, write
from forager.k8s.manifests import DEFAULT_IMAGE

app = typer.Typer(
    help="Kubernetes: foraging as an Indexed Job of workers, episodes as pods.", no_args_is_help=True
)

_DEFAULTS = ManifestOptions()
NamespaceOption = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the run.")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Worker pods running at once.")]
ImageOption = Annotated[
    str,
    typer.Option("--image", help="Forager's worker image as the cluster pulls it (`forager images self`)."),
]
Model = Annotated[
    str, typer.Option("--model", help="Base URL of the OpenAI-compatible server, as the cluster reaches it.")
]
ModelName = Annotated[str | None, typer.Option("--model-name", help="Model id. Default: the server's first.")]
Format = Annotated[str, typer.Option("--format", help="Action format the workers claim.")]
DbSecret = Annotated[
    str,
    typer.Option(
        "--db-secret", help="Secret with key database-url (and optionally api-key) for the workers."
    ),
]
Warm = Annotated[int, typer.Option("--warm", min=0, help="Environments each worker keeps started.")]
PullSecrets = Annotated[
    list[str] | None, typer.Option("--pull-secret", help="Image pull secret of the worker pods (repeatable).")
]
Kubeconfig = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="Default: $FORAGER_K8S_KUBECONFIG, $KUBECONFIG, in-cluster."),
]
Context = Annotated[
    str | None, typer.Option("--context", help="Kubeconfig context. Default: its current one.")
]


def _options(
    namespace: str, workers: int, image: str, model: str, model_name: str | None, action_format: str,
    db_secret: str, warm: int, pull_secrets: list[str] | None,
) -> ManifestOptions:  # fmt: skip
    return ManifestOptions(
        namespace=namespace, workers=workers, image=image, model=model, model_name=model_name,
        action_format=action_format, db_secret=db_secret, warm=warm,
        image_pull_secrets=tuple(pull_secrets or ()),
    )  # fmt: skip


@app.command("render")
def render_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write a kustomize directory here. Default: YAML on stdout.")
    ] = None,
    namespace: NamespaceOption = _DEFAULTS.namespace,
    workers: Workers = _DEFAULTS.workers,
    image: ImageOption = DEFAULT_IMAGE,
    model: Model = _DEFAULTS.model,
    model_name: ModelName = None,
    action_format: Format = _DEFAULTS.action_format,
    db_secret: DbSecret = _DEFAULTS.db_secret,
    warm: Warm = 0,
    pull_secrets: PullSecrets = None,
) -> None:
    """Write the run's manifests: Namespace, RBAC, NetworkPolicy, ConfigMap and the Indexed Job."""
    objects = render(
        _options(namespace, workers, image, model, model_name, action_format, db_secret, warm, pull_secrets)
    )
    if out is None:
        typer.echo("---\n".join(to_yaml(obj) for obj in objects), nl=False)
        return
    for path in write(objects, out):
        console.print(str(path), highlight=False)


@app.command()
def apply(
    namespace: NamespaceOption = _DEFAULTS.namespace,
    workers: Workers = _DEFAULTS.workers,
    image: ImageOption = DEFAULT_IMAGE,
    model: Model = _DEFAULTS.model,
    model_name: ModelName = None,
    action_format: Format = _DEFAULTS.action_format,
    db_secret: DbSecret = _DEFAULTS.db_secret,
    warm: Warm = 0,
    pull_secrets: PullSecrets = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    json: JsonOption = False,
) -> None:
    """Server-side apply the objects `render` writes (field manager `forager`); safe to repeat."""
    objects = render(
        _options(namespace, workers, image, model, model_name, action_format, db_secret, warm, pull_secrets)
    )
    cluster = Cluster(kubeconfig=kubeconfig, context=context)
    try:
        report = (lambda _: None) if json else (
            lambda a: console.print(f"{a.kind}/{a.name} {'created' if a.created else 'configured'}")
        )  # fmt: skip
        applied = cluster.apply(objects, report=report)
    finally:
        cluster.close()
    if json:
        print_json([a.__dict__ for a in applied])


@app.command()
def status(
    ctx: typer.Context,
    namespace: NamespaceOption = _DEFAULTS.namespace,
    action_format: Annotated[
        str | None, typer.Option("--format", help="Count items of this format only.")
    ] = None,
    cluster: Annotated[
        bool,
        typer.Option("--cluster/--no-cluster", help="Also read the Job's state, if a cluster is configured."),
    ] = True,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    json: JsonOption = False,
) -> None:
    """Queue depth, leased/done/failed items, episodes in the last hour, each worker's last heartbeat.

    Read from the store (`--db`), so it works without a cluster; the Job's pods are added when one is
    configured and answers.
    """
    store = open_store(ctx)
    try:
        state = run_status(store, action_format=action_format)
    finally:
        store.close()
    job: dict | None = None
    job_error = None
    if cluster:
        try:
            client = Cluster(kubeconfig=kubeconfig, context=context, request_timeout=5.0)
        except ForagerError as exc:
            job_error = str(exc)
        else:
            try:
                job = client.job(namespace)
                job_error = None if job is not None else f"no Job forager-worker in namespace {namespace}"
            except ForagerError as exc:
                job_error = str(exc)
            finally:
                client.close()
    if json:
        print_json({**state.to_json(), "job": job, "job_error": job_error})
        return
    console.print(
        f"queued {state.queued}, leased {state.leased}, done {state.done}, failed {state.failed}; "
        f"{state.episodes_last_hour} episodes in the last hour",
        highlight=False,
    )
    for name, at in sorted(state.heartbeats.items()):
        console.print(f"  worker {name}: last heartbeat {at:%Y-%m-%d %H:%M:%S}", highlight=False)
    if job is not None:
        console.print(
            f"Job: {job.get('active', 0)} active, {job.get('succeeded', 0)} succeeded, "
            f"{job.get('failed', 0)} failed; indexes done: {job.get('completedIndexes') or 'none'}",
            highlight=False,
        )
    elif job_error and cluster:
        console.print(f"Job: not read ({job_error})", highlight=False, markup=False)


@app.command()
def logs(
    namespace: NamespaceOption = _DEFAULTS.namespace,
    index: Annotated[int | None, typer.Option("--index", help="Only the worker of this Job index.")] = None,
    tail: Annotated[int | None, typer.Option("--tail", min=1, help="Last lines of each log.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing (needs --index).")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Print the worker pods' logs, each line prefixed with its pod."""
    if follow and index is None:
        raise typer.BadParameter("--follow needs --index: one worker's log at a time", param_hint="--follow")
    cluster = Cluster(kubeconfig=kubeconfig, context=context)
    try:
        pods = [p for p in cluster.worker_pods(namespace) if index is None or p.index == index]
        if not pods:
            raise ForagerError(
                f"no worker pod{'' if index is None else f' of index {index}'} in namespace {namespace}: "
                "see `forager k8s status`"
            )
        for pod in pods:
            for line in cluster.logs(namespace, pod.name, tail=tail, follow=follow):
                typer.echo(f"[{pod.name}] {line}")
    finally:
        cluster.close()


@app.command()
def delete(
    namespace: NamespaceOption = _DEFAULTS.namespace,
    with_namespace: Annotated[
        bool, typer.Option("--with-namespace", help="Delete the namespace too (and the Secret in it).")
    ] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Delete the run's Job (its pods with it), its other objects and any episode pod left behind.

    The store keeps every episode; the queue keeps the items not done, for the next run.
    """
    cluster = Cluster(kubeconfig=kubeconfig, context=context)
    try:
        deleted = cluster.delete(render(ManifestOptions(namespace=namespace)), namespace=with_namespace)
    finally:
        cluster.close()
    for what in deleted:
        console.print(f"deleted {what}", highlight=False)
