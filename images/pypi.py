"""Source distributions from a package index (PEP 691 JSON or PEP 503 HTML simple API).

``pip download --no-binary :all:`` would do, but it builds each sdist's metadata first, installing the
build backend in an isolated environment: 20 s for one small package on this machine. Reading the
index's simple API and fetching the file takes well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from core.errors import ForagerError

_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")
_JSON_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"


class PackageIndexError(ForagerError):
    """The package index has no usable source distribution, or cannot be reached."""


@dataclass(frozen=True)
class Sdist:
    """One source distribution file on the index."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str | None


def default_index_url() -> str:
    """The index pip on this host uses: ``PIP_INDEX_URL``, then pip's configuration, then pip's default."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    configured = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    )
    if configured.returncode == 0 and configured.stdout.strip():
        return configured.stdout.strip()
    # pip's own default, taken from pip so that no index host is written into Forager.
    from pip._internal.models.index import PyPI

    return PyPI.simple_url


def find_sdist(name: str, version: str | None, index_url: str, ca_bundle: Path | None = None) -> Sdist:
    """The sdist of ``name`` at ``version`` (default: the newest final release that has one)."""
    project = canonicalize_name(name)
    page_url = f"{index_url.rstrip('/')}/{project}/"
    body, content_type = _get(page_url, ca_bundle, accept=_JSON_ACCEPT)
    files = _parse_json(body) if "json" in content_type else _parse_html(body.decode(errors="replace"))
    candidates: list[tuple[Version, Sdist]] = []
    for filename, href, sha256, yanked in files:
        parsed = _sdist_version(filename, project)
        if parsed is None or (yanked and version is None):
            continue
        url = urljoin(page_url, href)
        candidates.append((parsed, Sdist(name, str(parsed), filename, url, sha256)))
    if version is not None:
        wanted = Version(version)
        matches = [sdist for parsed, sdist in candidates if parsed == wanted]
        if not matches:
            raise PackageIndexError(f"{name}=={version} has no source distribution on {index_url}")
        return _prefer_tar(matches)
    finals = [(parsed, sdist) for parsed, sdist in candidates if not parsed.is_prerelease]
    if not finals:
        raise PackageIndexError(f"{name} has no released source distribution on {index_url}")
    newest = max(parsed for parsed, _ in finals)
    return _prefer_tar([sdist for parsed, sdist in finals if parsed == newest])


def has_upload_times(index_url: str, ca_bundle: Path | None = None, project: str = "pip") -> bool:
    """Whether the index gives each file's upload time (PEP 700), which resolving as of a date needs.

    Asks for one project every index of Python packages has. uv treats a file without an upload time as
    unavailable under ``--exclude-newer``, so on an index without them (an HTML-only mirror, an old
    proxy) every resolution would fail. Raises :class:`PackageIndexError` when the index cannot be read.
    """
    body, content_type = _get(f"{index_url.rstrip('/')}/{project}/", ca_bundle, accept=_JSON_ACCEPT)
    if "json" not in content_type:
        return False
    try:
        files = json.loads(body).get("files", [])
    except (json.JSONDecodeError, AttributeError):
        return False
    return any(isinstance(f, dict) and f.get("upload-time") for f in files)


def project_page(name: str, index_url: str, ca_bundle: Path | None = None) -> dict[str, Any] | None:
    """The project's PEP 691 JSON page (``files`` with ``upload-time``, ``requires-python``, ``yanked``),
    or None when the index serves only HTML (PEP 503). Raises :class:`PackageIndexError` when the index
    cannot be read or has no such project."""
    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    body, content_type = _get(url, ca_bundle, accept=_JSON_ACCEPT)
    if "json" not in content_type:
        return None
    try:
        page = json.loads(body)
    except json.JSONDecodeError as exc:
        raise PackageIndexError(f"{url}: the index answered with malformed JSON ({exc})") from exc
    return page if isinstance(page, dict) else None


def download(sdist: Sdist, cache_dir: Path, ca_bundle: Path | None = None) -> Path:
    """The sdist file in ``cache_dir``, downloaded (and its hash checked) unless it is there already."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / sdist.filename
    if target.is_file() and (sdist.sha256 is None or _sha256(target) == sdist.sha256):
        return target
    body, _ = _get(sdist.url, ca_bundle)
    if sdist.sha256 and hashlib.sha256(body).hexdigest() != sdist.sha256:
        raise PackageIndexError(
            f"{sdist.filename} does not match the index's sha256: a proxy may have altered it"
        )
    partial = target.with_suffix(target.suffix + ".part")
    partial.write_bytes(body)
    partial.replace(target)  # atomic: a crash never leaves a truncated file under the real name
    return target


def cached_sdist(name: str, version: str, cache_dir: Path) -> Path | None:
    """A previously downloaded sdist of ``name==version``: pinned builds then need no index at all."""
    if not cache_dir.is_dir():
        return None
    project = canonicalize_name(name)
    for path in sorted(cache_dir.iterdir()):
        parsed = _sdist_version(path.name, project)
        if parsed is not None and parsed == Version(version):
            return path
    return None


def _get(url: str, ca_bundle: Path | None, accept: str = "*/*") -> tuple[bytes, str]:
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "forager"})
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        reason = "no such project" if exc.code == 404 else f"HTTP {exc.code}"
        raise PackageIndexError(f"{url}: {reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PackageIndexError(
            f"cannot reach the package index at {url} ({reason}): check the network, the proxy "
            "variables and --ca-bundle"
        ) from exc


def _parse_json(body: bytes) -> list[tuple[str, str, str | None, bool]]:
    data = json.loads(body)
    return [
        (f["filename"], f["url"], f.get("hashes", {}).get("sha256"), bool(f.get("yanked")))
        for f in data.get("files", [])
    ]


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[tuple[str, str, str | None, bool]] = []
        self._href: str | None = None
        self._yanked = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            attributes = dict(attrs)
            self._href = attributes.get("href")
            self._yanked = "data-yanked" in attributes

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            url, fragment = urldefrag(self._href)
            sha256 = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
            self.files.append((data.strip(), url, sha256, self._yanked))
            self._href = None


def _parse_html(text: str) -> list[tuple[str, str, str | None, bool]]:
    parser = _Anchors()
    parser.feed(text)
    return parser.files


def _sdist_version(filename: str, project: str) -> Version | None:
    suffix = next((s for s in _SDIST_SUFFIXES if filename.endswith(s)), None)
    if suffix is None:
        return None
    stem = filename[: -len(suffix)]
    # The name part may itself contain dashes; the version is what follows the dash after it.
    for match in re.finditer("-", stem):
        if canonicalize_name(stem[: match.start()]) == project:
            try:
                return Version(stem[match.end() :])
            except InvalidVersion:
                return None
    return None


def _prefer_tar(sdists: list[Sdist]) -> Sdist:
    return min(sdists, key=lambda s: (not s.filename.endswith(".tar.gz"), s.filename))


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
