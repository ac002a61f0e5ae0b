"""Proxy and CA-bundle settings carried into every build step that downloads packages.

Corporate networks often intercept TLS: pip, git and apt inside a build then fail certificate
verification unless they trust the proxy's CA. The settings here are read from the usual environment
variables on the host and handed to build containers as a read-only bind mount inside a tmpfs plus
per-exec environment variables, so nothing of them is baked into a committed image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import Mount

from core.errors import ForagerError

#: A tmpfs in every build container: mount points created inside it never reach a committed image.
CONTAINER_SECRETS_DIR = "/run/forager"
#: Where a build container sees the host's CA bundle.
CONTAINER_CA_PATH = f"{CONTAINER_SECRETS_DIR}/ca-bundle.crt"

#: Environment variables that name a CA bundle, in the order they are consulted.
CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")
DEBIAN_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

#: Tools read either spelling; both are passed on.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")

#: Variables a build step gets so that pip, uv, git, requests and curl all trust the bundle.
_CA_CONSUMERS = ("PIP_CERT", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


class CABundleError(ForagerError):
    """The CA bundle that was asked for cannot be used."""


def resolve_ca_bundle(
    option: str | Path | None = None, environ: Mapping[str, str] = os.environ
) -> Path | None:
    """Find the CA bundle build steps should trust.

    An explicit ``option`` wins and must exist. Otherwise the first of ``SSL_CERT_FILE``,
    ``REQUESTS_CA_BUNDLE`` and ``PIP_CERT`` that names an existing file is used, then Debian's
    ``/etc/ssl/certs/ca-certificates.crt``. Returns ``None`` when there is none at all.
    """
    if option:
        path = Path(option).expanduser()
        if not path.is_file():
            raise CABundleError(f"CA bundle {path} does not exist: pass an existing PEM file to --ca-bundle")
        return path.resolve()
    for name in CA_BUNDLE_VARIABLES:
        value = environ.get(name)
        if value and Path(value).is_file():
            return Path(value).resolve()
    return DEBIAN_CA_BUNDLE if DEBIAN_CA_BUNDLE.is_file() else None


def count_certificates(path: Path) -> int:
    """How many PEM certificates the file holds (0 means it is not a usable bundle)."""
    return path.read_bytes().count(b"-----BEGIN CERTIFICATE-----")


@dataclass(frozen=True)
class NetworkSettings:
    """What a downloading build step needs to get through the host's proxy."""

    ca_bundle: Path | None = None
    proxies: dict[str, str] = field(default_factory=dict)
    index_url: str | None = None
    """The package index, when the host names one in ``PIP_INDEX_URL`` (a corporate mirror)."""

    @classmethod
    def from_environment(
        cls, ca_bundle: str | Path | None = None, environ: Mapping[str, str] = os.environ
    ) -> NetworkSettings:
        """Settings from the ``--ca-bundle`` option and the host's environment variables."""
        proxies: dict[str, str] = {}
        for name in PROXY_VARIABLES:
            value = environ.get(name) or environ.get(name.lower())
            if value:
                proxies[name] = proxies[name.lower()] = value
        index_url = environ.get("PIP_INDEX_URL") or None
        return cls(ca_bundle=resolve_ca_bundle(ca_bundle, environ), proxies=proxies, index_url=index_url)

    def environment(self) -> dict[str, str]:
        """Environment variables for a build container."""
        env = dict(self.proxies)
        if self.index_url:
            env["PIP_INDEX_URL"] = env["UV_INDEX_URL"] = self.index_url
        if self.ca_bundle:
            env.update(dict.fromkeys(_CA_CONSUMERS, CONTAINER_CA_PATH))
        return env

    def container_options(self) -> dict[str, Any]:
        """Keyword arguments for the docker SDK's ``containers.run``/``create`` of a build container.

        ``mounts=`` rather than ``volumes=``: docker-py copies ``volumes=`` into the container's
        config, which ``docker commit`` would then turn into an anonymous volume in the image.
        """
        if not self.ca_bundle:
            return {}
        return {
            "tmpfs": {CONTAINER_SECRETS_DIR: "size=16m,mode=0755"},
            "mounts": [Mount(CONTAINER_CA_PATH, str(self.ca_bundle), type="bind", read_only=True)],
        }

    def apt_options(self) -> list[str]:
        """``apt-get`` options that make apt trust the bundle for https mirrors."""
        return [f"-oAcquire::https::CAInfo={CONTAINER_CA_PATH}"] if self.ca_bundle else []
