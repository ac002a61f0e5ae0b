"""``forager images``: repository images and the base image they are layered on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forager.cli.output import JsonOption, console, print_json, progress_display, settings
from images.base import ensure_base_image
from images.engine import connect
from images.proxy import NetworkSettings

app = typer.Typer(help="Build, list and inspect repository images.", no_args_is_help=True)

CABundleOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        help="PEM bundle that build steps trust (for TLS-intercepting proxies). "
        "Default: $SSL_CERT_FILE, $REQUESTS_CA_BUNDLE, $PIP_CERT or the system bundle.",
    ),
]


@app.command()
def base(
    ctx: typer.Context,
    mirror: Annotated[
        str | None, typer.Option(help="Debian mirror URL. Default: the one this host's apt uses.")
    ] = None,
    ca_bundle: CABundleOption = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even if the image exists.")] = False,
    json: JsonOption = False,
) -> None:
    """Make the shared base image (Debian minbase + Python, pip, venv, git, build tools).

    Uses debootstrap and docker import, so no container registry is needed. Skips the work when the
    image already exists.
    """
    network = NetworkSettings.from_environment(ca_bundle)
    client = connect()
    log_dir = settings(ctx).logs / "base"
    with progress_display() as progress:
        image = ensure_base_image(
            client, network, mirror=mirror, log_dir=log_dir, rebuild=rebuild, progress=progress
        )
    if json:
        print_json({"tag": image.tag, "id": image.id, "size_bytes": image.size_bytes, "built": image.built})
        return
    verb = "built" if image.built else "already present"
    console.print(
        f"{image.tag} {verb} ({image.size_bytes / 2**20:.0f} MiB, {image.id[7:19]})", highlight=False
    )
