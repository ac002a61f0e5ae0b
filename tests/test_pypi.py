"""Reading a package index: a small PEP 691 (JSON) / PEP 503 (HTML) index served over loopback HTTP."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest

from images.build_log import BuildLog
from images.builder import BuildOptions, ImageBuilder
from images.proxy import NetworkSettings
from images.pypi import PackageIndexError, cached_sdist, download, find_sdist, has_upload_times
from images.sources import Checkout, parse_source

#: filename → (content, yanked); "demo-pkg" has a pre-release newer than its newest final release.
FILES: dict[str, tuple[bytes, bool]] = {
    "demo_pkg-1.0.tar.gz": (b"one point oh", False),
    "demo_pkg-1.0.zip": (b"one point oh, zipped", False),
    "demo_pkg-1.1.tar.gz": (b"one point one, yanked", True),
    "demo_pkg-1.0.1.tar.gz": (b"one point oh one", False),
    "demo_pkg-2.0rc1.tar.gz": (b"two, release candidate", False),
    "demo_pkg-1.0.1-py3-none-any.whl": (b"a wheel, never an sdist", False),
    "demo_pkg-0.9.tar.gz": (b"tampered on the way", False),
}
#: A file whose listed hash is not its content's: what a proxy altering downloads looks like.
WRONG_HASH = "demo_pkg-0.9.tar.gz"


def _sha256(filename: str) -> str:
    content = b"the original" if filename == WRONG_HASH else FILES[filename][0]
    return hashlib.sha256(content).hexdigest()


class _Index(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path.startswith("/files/") and self.path[7:] in FILES:
            self._reply(FILES[self.path[7:]][0], "application/octet-stream")
        elif self.path == "/json/pip/":
            self._reply(_json(upload_times=True)[0], "application/vnd.pypi.simple.v1+json")
        elif self.path in ("/json/demo-pkg/", "/html/demo-pkg/", "/html/pip/"):
            html = self.path.startswith("/html/")
            self._reply(*(_html() if html else _json()))
        else:
            self.send_error(404)

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _json(upload_times: bool = False) -> tuple[bytes, str]:
    files = [
        {"filename": name, "url": f"../../files/{name}", "hashes": {"sha256": _sha256(name)}}
        | {"yanked": yanked}
        | ({"upload-time": "2023-01-02T03:04:05.000000Z"} if upload_times else {})
        for name, (_, yanked) in FILES.items()
    ]
    body = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo-pkg", "files": files}).encode()
    return body, "application/vnd.pypi.simple.v1+json"


def _html() -> tuple[bytes, str]:
    yanked_attribute = ' data-yanked=""'
    anchors = "".join(
        f'<a href="../../files/{name}#sha256={_sha256(name)}"{yanked_attribute if yanked else ""}>'
        f"{name}</a><br>"
        for name, (_, yanked) in FILES.items()
    )
    return f"<!DOCTYPE html><html><body>{anchors}</body></html>".encode(), "text/html"


@pytest.fixture(scope="module")
def index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["json", "html"])
def index_url(request: pytest.FixtureRequest, index: str) -> str:
    return f"{index}/{request.param}"


def test_newest_final_release_skips_yanked_and_pre_releases_and_prefers_tar(index_url: str) -> None:
    sdist = find_sdist("Demo.Pkg", None, index_url)
    assert (sdist.version, sdist.filename) == ("1.0.1", "demo_pkg-1.0.1.tar.gz")
    assert sdist.url.endswith("/files/demo_pkg-1.0.1.tar.gz") and sdist.sha256 == _sha256(sdist.filename)


@pytest.mark.parametrize(
    ("version", "filename"),
    [("1.0", "demo_pkg-1.0.tar.gz"), ("1.1", "demo_pkg-1.1.tar.gz"), ("2.0rc1", "demo_pkg-2.0rc1.tar.gz")],
    ids=["tar-over-zip", "yanked-when-pinned", "pre-release-when-pinned"],
)
def test_a_pinned_version_is_found_even_yanked_or_pre_release(
    index_url: str, version: str, filename: str
) -> None:
    assert find_sdist("demo-pkg", version, index_url).filename == filename


def test_a_version_without_sdist_and_an_unknown_project_are_clear_errors(index_url: str) -> None:
    with pytest.raises(PackageIndexError, match=r"demo-pkg==3\.0 has no source distribution"):
        find_sdist("demo-pkg", "3.0", index_url)
    with pytest.raises(PackageIndexError, match="no such project"):
        find_sdist("nothing-here", None, index_url)


def test_download_checks_the_sha256_and_caches(index: str, tmp_path: Path) -> None:
    sdist = find_sdist("demo-pkg", "1.0.1", f"{index}/json")
    path = download(sdist, tmp_path)
    assert path.read_bytes() == FILES["demo_pkg-1.0.1.tar.gz"][0]
    before = len(_Index.requests)
    assert download(sdist, tmp_path) == path and len(_Index.requests) == before, "served from the cache"
    assert cached_sdist("Demo_Pkg", "1.0.1", tmp_path) == path
    assert cached_sdist("demo-pkg", "1.0", tmp_path) is None

    tampered = find_sdist("demo-pkg", "0.9", f"{index}/json")
    with pytest.raises(PackageIndexError, match="does not match the index's sha256"):
        download(tampered, tmp_path)
    assert not list(tmp_path.glob("demo_pkg-0.9*")), "nothing of a file that failed its check is kept"


def test_an_unreachable_index_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(PackageIndexError, match="cannot reach the package index"):
        find_sdist("demo-pkg", None, "http://127.0.0.1:9/simple")


def test_upload_times_are_detected_and_their_absence_is_said(index: str) -> None:
    assert has_upload_times(f"{index}/json") is True
    # An HTML-only index, and a JSON one whose files carry no upload-time (PEP 700), cannot time-travel.
    assert has_upload_times(f"{index}/html") is False
    assert has_upload_times(f"{index}/json", project="demo-pkg") is False
    with pytest.raises(PackageIndexError, match="cannot reach the package index"):
        has_upload_times("http://127.0.0.1:9/simple")


@pytest.mark.parametrize("kind", ["json", "html"])
def test_the_builder_resolves_as_of_the_commit_only_where_the_index_has_upload_times(
    index: str, tmp_path: Path, kind: str
) -> None:
    options = BuildOptions(network=NetworkSettings(index_url=f"{index}/{kind}"))
    builder = ImageBuilder(client=None, store=None, home=tmp_path, options=options)  # type: ignore[arg-type]
    committed = datetime(2021, 3, 4, 5, 6, tzinfo=UTC)
    checkout = Checkout(parse_source(str(tmp_path)), tmp_path, "c" * 40, committed_at=committed)
    log = BuildLog(tmp_path / "build.log")
    moment = builder.resolve_as_of(checkout, log)
    if kind == "json":
        assert moment == committed + timedelta(days=1)
        assert "resolving as of 2021-03-05 05:06 UTC" in log.text()
    else:
        assert moment is None, "an index without upload times would make uv treat every file as missing"
        assert f"the package index {index}/html gives no upload times (PEP 700)" in log.text()
    builder.options = replace(options, resolve_newest=True)
    assert builder.resolve_as_of(checkout, log) is None and "--resolve-newest" in log.text()
    assert builder.resolve_as_of(replace(checkout, committed_at=None), log) is None
