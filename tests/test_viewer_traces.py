"""``forager view``'s trace pages and the episode list's way back: the traces list with its filters and
keyset pages both ways, one trace step by step in a real browser (chromium, headless) with a ``<script>``
in a repr that never runs, the static export with traces, and "previous page" on the episode list."""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from pathlib import Path
from types import ModuleType
from urllib.parse import urljoin

import pytest

from envs import trace_format
from envs.tracer import trace_call
from forager.viewer import export_site, make_app, pages
from storage import Image, Store
from storage.models import Trace, TraceKind, TraceStatus
from tests import test_viewer
from tests.cli import forager
from tests.test_viewer import Corpus, Server, _image, episode_ids, get, hrefs

#: The episode viewer tests' fixtures: their chromium, and their store of realistic episodes.
browser = test_viewer.browser
sqlite_corpus = test_viewer.sqlite_corpus

#: A repr that would retitle the page and set a global if it ever ran as markup.
SCRIPT = "<script>document.title = 'pwned'; window.pwned = 1;</script>"
IMG = '<img src=x onerror="window.pwned = 2">'

MODULE = f'''\
class Sneaky:
    def __repr__(self):
        return {SCRIPT!r}


def walk(items):
    total = 0
    for item in items:
        total += len(repr(item))
    return total


def boom(x):
    y = x * 2
    raise ValueError({IMG!r})
'''


def _load(tmp_path: Path) -> tuple[Path, ModuleType]:
    root = tmp_path / f"repo_{uuid.uuid4().hex[:8]}"
    root.mkdir()
    (root / "sneaky.py").write_text(MODULE)
    spec = importlib.util.spec_from_file_location(f"sneaky_{root.name}", root / "sneaky.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return root, module


def _row(image: Image, data: dict, name: str, n: int, **fields: object) -> Trace:
    values: dict[str, object] = {
        "image_id": image.id,
        "key": f"{image.id}|function|tests/test_sneaky.py::test_{name}_{n}|sneaky.py::{name}",
        "kind": TraceKind.FUNCTION,
        "test": f"tests/test_sneaky.py::test_{name}_{n}",
        "path": "sneaky.py",
        "qualname": name,
        "line": data["blocks"][0][1],
        "status": TraceStatus.OK,
        "drop_reason": "",
        "deterministic": True,
        "n_frames": len(data["frames"]),
        "truncated_values": 0,
        "unrepresentable_values": 0,
        "seconds": 0.01,
        "context": trace_format.context(data),
        "data": data,
    }
    values.update(fields)
    return Trace(**values)


@pytest.fixture
def traced(store: Store, tmp_path: Path) -> dict[str, Trace]:
    """Traces recorded by the real tracer: ``walk`` over a hostile repr, ``boom`` raising markup, 25 more
    of ``walk`` (for the pages), a dropped non-deterministic one, and one of another image."""
    root, module = _load(tmp_path)
    walk = trace_call(str(root), module.walk, [module.Sneaky(), "ab"])
    boom = trace_call(str(root), module.boom, 3)
    assert walk["status"] == boom["status"] == "ok"
    image = _image(store, "acme/sneaky", f"forager/acme__sneaky:{uuid.uuid4().hex[:8]}")
    other = _image(store, "acme/other", f"forager/acme__other:{uuid.uuid4().hex[:8]}")
    rows = {"walk": _row(image, walk, "walk", 0), "boom": _row(image, boom, "boom", 0)}
    rows.update({f"walk{n}": _row(image, walk, "walk", n) for n in range(1, 26)})
    diverged = {**walk, "divergence": {"frame": 3, "first": walk["frames"][3], "second": walk["frames"][2]}}
    rows["flaky"] = _row(
        image, diverged, "walk", 99, status=TraceStatus.DROPPED, drop_reason="nondeterministic",
        deterministic=False,
    )  # fmt: skip
    rows["other"] = _row(other, boom, "boom", 0)
    store.add_traces(rows.values())
    return {name: store.get_trace(row.id) for name, row in rows.items()}


@pytest.fixture
def server(store: Store) -> Server:
    running = Server(make_app(store))
    yield running
    running.close()


def trace_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<td class="num"><a href="/traces/(\d+)">', html)]


def test_a_trace_page_shows_source_and_frames_escaped(traced: dict[str, Trace], server: Server) -> None:
    walk = traced["walk"]
    page = get(f"{server.url}/traces/{walk.id}")
    assert page.status == 200 and "Content-Security-Policy" in page.headers
    html = page.text
    assert SCRIPT not in html and IMG not in html
    assert "&lt;script&gt;document.title = &#39;pwned&#39;" in html
    # The source the trace entered, numbered, the entry's def line marked; every frame, in order.
    assert '<span class="src-line entry" id="L0-6"><span class="ln">6</span>def walk(items):' in html
    assert html.count('<tr id="frame-') == walk.n_frames
    assert re.findall(r'class="event (\w+)">', html)[:3] == ["call", "line", "line"]
    # The stepping script's frames: JSON whose markup characters are escaped, every local resolved.
    block = re.search(r'<script type="application/json" id="trace-steps">(.*?)</script>', html, re.S)
    assert block and "<" not in block.group(1)
    steps = json.loads(block.group(1))
    resolved = list(trace_format.resolved_frames(walk.data))
    assert [dict(step["locals"]) if step["locals"] else None for step in steps] == [
        frame["locals"] for frame in resolved
    ]
    assert steps[-1] == {
        "event": "return", "file": 0, "line": 10, "locals": [], "changed": [],
        "value": str(len(SCRIPT) + len("'ab'")),
    }  # fmt: skip

    boom = get(f"{server.url}/traces/{traced['boom'].id}").text
    assert IMG not in boom and "ValueError(&#39;&lt;img src=x onerror=" in boom
    flaky = get(f"{server.url}/traces/{traced['flaky'].id}").text
    assert "the recordings first differ at frame 3" in flaky and "nondeterministic" in flaky
    assert get(f"{server.url}/traces/999999").status == 404
    assert get(f"{server.url}/traces/nope").status == 404


def test_the_traces_list_filters_and_pages_both_ways(
    traced: dict[str, Trace], server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = sorted((t.id for t in traced.values() if t.status == TraceStatus.OK), reverse=True)
    image = traced["walk"].image_id

    def shown(query: str) -> list[int]:
        return trace_ids(get(f"{server.url}/traces?{query}").text)

    assert shown("") == kept
    assert shown(f"image={image}") == [i for i in kept if i != traced["other"].id]
    assert shown("entry=boom") == sorted([traced["boom"].id, traced["other"].id], reverse=True)
    assert shown("entry=test_walk_1") == sorted(  # test ids contain it: 1, 10 ... 19
        [t.id for n, t in traced.items() if t.test.startswith("tests/test_sneaky.py::test_walk_1")],
        reverse=True,
    )
    assert shown("status=dropped") == [traced["flaky"].id]
    assert shown("status=all&deterministic=no") == [traced["flaky"].id]
    assert shown("kind=test") == []
    for bad in ("status=maybe", "kind=lambda", "deterministic=perhaps", "image=x"):
        answer = get(f"{server.url}/traces?{bad}")
        assert answer.status == 400, bad

    monkeypatch.setattr(pages, "PAGE_SIZE", 7)
    forward, url, html = [], f"{server.url}/traces?image={image}", ""
    while url:
        html = get(url).text
        forward.append(trace_ids(html))
        following = [href for href in hrefs(html) if "after=" in href]
        url = urljoin(server.url, following[0]) if following else ""
    assert [i for page in forward for i in page] == [i for i in kept if i != traced["other"].id]
    assert all(len(page) == 7 for page in forward[:-1]) and len(forward) == 4
    # From the last page back to the first by "previous page": the same pages, in reverse.
    backward = [trace_ids(html)]
    while previous := [href for href in hrefs(html) if "before=" in href]:
        assert f"image={image}" in previous[0]
        html = get(urljoin(server.url, previous[0])).text
        backward.append(trace_ids(html))
    assert backward[::-1] == forward


def test_the_episode_list_has_a_previous_page(
    sqlite_corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = Server(make_app(sqlite_corpus.store))
    try:
        monkeypatch.setattr(pages, "PAGE_SIZE", 5)
        for query in ("", "sort=turns&order=asc", "model=oracle&sort=tokens"):
            forward, url, html = [], f"{running.url}/episodes?{query}", ""
            while url:
                html = get(url).text
                assert 'rel="prev"' in html or not forward  # every page but the first has one
                forward.append(episode_ids(html))
                following = [href for href in hrefs(html) if "after=" in href]
                url = urljoin(running.url, following[0]) if following else ""
            assert len(forward) > 2, query
            backward = [episode_ids(html)]
            while previous := [href for href in hrefs(html) if "before=" in href]:
                html = get(urljoin(running.url, previous[0])).text
                backward.append(episode_ids(html))
                # Going back, "next page" continues forward from there.
                assert any("after=" in href for href in hrefs(html))
            assert backward[::-1] == forward, query
        assert get(f"{running.url}/episodes?before=nope").status == 400
    finally:
        running.close()


def test_the_export_writes_the_selected_traces(
    traced: dict[str, Trace], store: Store, tmp_path: Path
) -> None:
    from storage.traces import TraceFilter

    site = tmp_path / "site"
    report = export_site(store, site, traces=TraceFilter(image_id=traced["walk"].image_id))
    assert report.traces == 27
    page = (site / "traces" / f"{traced['walk'].id}.html").read_text()
    assert SCRIPT not in page and 'src="../static/viewer.js"' in page and 'href="../traces.html"' in page
    listing = (site / "traces.html").read_text()
    assert f'href="traces/{traced["walk"].id}.html"' in listing
    assert not (site / "traces" / f"{traced['other'].id}.html").exists()
    for written in [*site.glob("traces*.html"), *(site / "traces").iterdir()]:
        for href in hrefs(written.read_text()):
            target = href.partition("#")[0]
            assert not target or (written.parent / target).resolve().is_file(), (written, href)
    # Without a trace selection the listing is there (the navigation links it), empty.
    bare = export_site(store, tmp_path / "bare")
    assert bare.traces == 0 and "No trace matches" in (tmp_path / "bare" / "traces.html").read_text()

    # The command: --traces (all images') and --trace-image.
    image = traced["other"].image
    done = forager("--db", store.url, "view", "--export", str(tmp_path / "cli"), "--traces", home=tmp_path)
    assert done.returncode == 0 and "28 traces" in done.stdout, done.stderr
    one = forager("--db", store.url, "view", "--export", str(tmp_path / "one"), "--traces", "--trace-image",
                  image.tag, home=tmp_path)  # fmt: skip
    assert one.returncode == 0 and "1 traces" in one.stdout, one.stderr
    assert [p.name for p in (tmp_path / "one" / "traces").iterdir()] == [f"{traced['other'].id}.html"]


def _no_markup_ran(browser: object, title: str) -> None:
    assert browser.title == title
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    scripts = "return document.querySelectorAll('script:not([src]):not([type=\"application/json\"]), img')"
    assert browser.execute_script(scripts + ".length") == 0


def test_a_browser_steps_through_a_trace_and_no_repr_runs(
    traced: dict[str, Trace], server: Server, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    walk = traced["walk"]
    browser.get(f"{server.url}/traces")
    browser.find_element(By.LINK_TEXT, str(walk.id)).click()
    title = f"Trace {walk.id} · walk · Forager"
    assert browser.title == title
    _no_markup_ran(browser, title)

    def now() -> tuple[str, str, str, dict[str, str]]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#step-locals tr")
        shown = {row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
                 for row in rows}  # fmt: skip
        current = browser.find_element(By.CSS_SELECTOR, ".src-line.current").get_attribute("id")
        count, event = browser.find_element(By.ID, "step-count"), browser.find_element(By.ID, "step-event")
        return count.text, event.text, current, shown

    resolved = list(trace_format.resolved_frames(walk.data))
    assert now() == (f"1 of {walk.n_frames}", "call", "L0-6", resolved[0]["locals"])
    next_button = browser.find_element(By.ID, "step-next")
    for number in range(1, 5):
        next_button.click()
        frame = resolved[number]
        assert now() == (f"{number + 1} of {walk.n_frames}", frame["event"], f"L0-{frame['line']}",
                         frame["locals"]), number  # fmt: skip
        assert browser.current_url.endswith(f"#frame-{number}")
    # The hostile repr is a local now: shown as text, never run.
    assert now()[3] == {"self": SCRIPT}  # in `__repr__`, called from the entry
    _no_markup_ran(browser, title)
    test_viewer._screenshot(browser, "trace", tmp_path)  # the README's, with FORAGER_VIEWER_SCREENSHOTS
    # Keys step too; End goes to the return and its value.
    browser.find_element(By.TAG_NAME, "body").send_keys("k")
    assert now()[0] == f"4 of {walk.n_frames}"
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.END)
    assert now()[:2] == (f"{walk.n_frames} of {walk.n_frames}", "return")
    assert browser.find_element(By.ID, "step-value").text == str(len(SCRIPT) + len("'ab'"))
    # A shared address opens at its frame; a click on a frame row steps there.
    browser.get(f"{server.url}/traces/{walk.id}#frame-2")
    WebDriverWait(browser, 10).until(lambda _: now()[0] == f"3 of {walk.n_frames}")
    browser.find_element(By.CSS_SELECTOR, "#frame-6 td:nth-child(2)").click()
    assert now()[0] == f"7 of {walk.n_frames}"
    # The exception's value, markup in it shown as text.
    browser.get(f"{server.url}/traces/{traced['boom'].id}")
    raised = next(n for n, frame in enumerate(traced["boom"].data["frames"]) if frame[0] == "exception")
    browser.find_element(By.CSS_SELECTOR, f"#frame-{raised} td:nth-child(2)").click()
    assert browser.find_element(By.ID, "step-event").text == "exception"
    assert IMG in browser.find_element(By.ID, "step-value").text
    _no_markup_ran(browser, f"Trace {traced['boom'].id} · boom · Forager")
