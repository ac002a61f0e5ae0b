"""``forager doctor``: is this machine ready to build images and forage, and if not, what to do."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
from docker.errors import DockerException

from core.errors import ForagerError
from forager.settings import Settings
from images.base import BASE_IMAGE, find_base_image
from images.engine import describe
from images.proxy import CABundleError, count_certificates, resolve_ca_bundle
from storage import Store

#: Below this much free disk, builds start failing in confusing ways.
LOW_DISK_BYTES = 10 * 2**30


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report. ``fix`` says what to do when ``status`` is not ``ok``."""

    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""


def run_checks(settings: Settings, ca_bundle: Path | None = None) -> list[Check]:
    """Every check, in the order a user would fix them."""
    client, engine = _check_engine()
    checks = [engine, _check_base_image(client), _check_database(settings), _check_ca_bundle(ca_bundle)]
    checks.append(_check_disk(settings.home, client))
    if client is not None:
        client.close()
    return checks


def _check_engine() -> tuple[docker.DockerClient | None, Check]:
    try:
        client = docker.from_env(timeout=10)
        version = client.version()
        driver = client.info().get("Driver", "?")
    except DockerException as exc:
        return None, Check(
            "docker engine",
            "fail",
            f"no engine answers ({describe(exc)})",
            "run scripts/setup.sh (as root on Debian it installs docker.io and starts dockerd), "
            "or start your engine and set DOCKER_HOST",
        )
    return client, Check(
        "docker engine", "ok", f"Docker Engine {version['Version']}, storage driver {driver}"
    )


def _check_base_image(client: docker.DockerClient | None) -> Check:
    if client is None:
        return Check("base image", "fail", "not checked: no Docker engine", "start the engine first")
    image = find_base_image(client)
    if image is None:
        return Check("base image", "fail", f"{BASE_IMAGE} is missing", "run `forager images base`")
    return Check(
        "base image", "ok", f"{BASE_IMAGE} ({image.attrs['Size'] / 2**20:.0f} MiB, {image.short_id[7:]})"
    )


def _check_database(settings: Settings) -> Check:
    try:
        store = Store(settings.db_url)
    except ForagerError as exc:
        return Check(
            "database", "fail", str(exc), "see the message; `forager db upgrade` migrates an old schema"
        )
    try:
        return Check("database", "ok", f"{store.url} at revision {store.schema_revision()}")
    finally:
        store.close()


def _check_ca_bundle(option: Path | None) -> Check:
    try:
        path = resolve_ca_bundle(option)
    except CABundleError as exc:
        return Check("CA bundle", "fail", str(exc), "pass an existing PEM file to --ca-bundle")
    if path is None:
        return Check(
            "CA bundle",
            "warn",
            "none found; builds behind a TLS-intercepting proxy will fail",
            "set SSL_CERT_FILE or pass --ca-bundle if your network intercepts TLS",
        )
    count = count_certificates(path)
    if count == 0:
        return Check(
            "CA bundle", "fail", f"{path} holds no PEM certificate", "point --ca-bundle at a PEM bundle"
        )
    return Check("CA bundle", "ok", f"{path} ({count} certificates)")


def _check_disk(home: Path, client: docker.DockerClient | None) -> Check:
    places = {"home": _existing_parent(home)}
    if client is not None:
        root = Path(client.info().get("DockerRootDir", ""))
        if root.is_dir():  # only when the engine runs on this machine
            places["docker"] = root
    lowest = min(places.items(), key=lambda item: shutil.disk_usage(item[1]).free)
    free = shutil.disk_usage(lowest[1]).free
    detail = ", ".join(
        f"{name} {shutil.disk_usage(path).free / 2**30:.0f} GiB free" for name, path in places.items()
    )
    if free < LOW_DISK_BYTES:
        return Check(
            "disk",
            "warn",
            detail,
            f"free space under {lowest[1]} (`forager images prune`, `docker system prune`)",
        )
    return Check("disk", "ok", detail)


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path
