"""``forager view``: every page over a real store, escaping, filters, search, paging, the token, the
static export, and a real browser (Debian's chromium, headless) that clicks through the pages and proves
that a ``<script>`` printed by a model does not run."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import sqlalchemy as sa
from aiohttp import web

from core.errors import ForagerError
from forager.viewer import export_site, make_app, pages, serve
from storage import (
    Episode,
    EpisodeFilter,
    EpisodeStatus,
    Image,
    ImageStatus,
    Step,
    Store,
    Task,
    TaskKind,
    TaskStatus,
)
from storage import viewer_queries as vq
from tests.cli import forager

#: What a model printed: it would retitle the page and set a global if it ever ran.
HOSTILE = (
    "<script>document.title = 'pwned'; window.pwned = 1;</script>"
    '<img src=x onerror="window.pwned = 2"><b>bold?</b>'
)
#: A word only one observation contains, for the search.
NEEDLE = "ZebraQuokka"
MODELS = ("qwen2.5-coder-32b", "gpt-4.1-mini", "oracle")


# ---- a store with realistic episodes --------------------------------------------------------------------


@dataclass
class Corpus:
    store: Store
    episodes: list[Episode]
    hostile: Episode
    """The episode whose observation holds ``HOSTILE`` and ``NEEDLE``."""
    tasks: list[Task]
    images: list[Image]


def _image(store: Store, name: str, tag: str, **fields: object) -> Image:
    repository = store.get_or_create_repository(f"https://github.com/{name}", name, "0123456789abcdef")
    values: dict[str, object] = {
        "status": ImageStatus.READY,
        "base_image": "forager/base:bookworm",
        "recipe": {"python": "3.11", "install": ["pip install -e .[tests]"]},
        "recipe_hash": "r" + tag[-1],
        "test_command": "python -m pytest -p no:cacheprovider tests",
        "baseline": {f"tests/test_core.py::test_{i}": "passed" if i % 9 else "skipped" for i in range(40)},
        "tests_passed": 36,
        "tests_total": 40,
        "size_bytes": 412_000_000,
        "build_seconds": 148.2,
        "log_tail": "Successfully installed widgets-1.0\n36 passed, 4 skipped in 3.21s\n",
    }
    values.update(fields)
    return store.save_image(Image(repository_id=repository.id, tag=tag, **values))


def _steps(rng: random.Random, n: int, *, hostile: bool = False) -> list[Step]:
    steps = []
    for i in range(n):
        if i == 0:
            action = {"tool": "bash", "arguments": {"command": "grep -rn 'def parse' src/ | head"}}
            observation = "src/widgets/parse.py:12:def parse(text, strict=False):\n[exit code 0]"
        elif i == n - 1:
            action = {"tool": "submit", "arguments": {}}
            observation = "Submitted."
        elif i % 4 == 1:
            action = {
                "tool": "edit",
                "arguments": {
                    "path": "src/widgets/parse.py",
                    "old_str": "    if len(items) > limit:\n        raise ValueError(text)",
                    "new_str": (
                        "    if len(items) >= limit:\n        raise ValueError(f'too many items: {text}')"
                    ),
                },
            }
            observation = (
                "Edited src/widgets/parse.py:\n 14     if len(items) >= limit:\n 15         raise ..."
            )
        elif i % 4 == 2:
            action = {
                "tool": "create",
                "arguments": {"path": "tests/test_limit.py", "content": "def test():\n    pass\n"},
            }
            observation = "Created tests/test_limit.py."
        elif i % 4 == 3 and i == 3:
            action = "<tool: bash\nls"  # a malformed call: the raw text is kept
            observation = "Format error: the tool block is not closed."
        else:
            action = {"tool": "bash", "arguments": {"command": "python -m pytest -q tests/test_parse.py"}}
            lines = [f"tests/test_parse.py::test_case_{k} PASSED" for k in range(rng.randint(5, 60))]
            observation = "\n".join(lines) + "\n[exit code 0]"
        if hostile and i == 1:
            observation = f"{HOSTILE}\nthe {NEEDLE} log line\n"
        steps.append(
            Step(
                index=i,
                thought=f"Step {i}: look at how parse() handles the limit." if i % 2 == 0 else None,
                action=action,
                observation=observation,
                model_seconds=round(rng.uniform(0.4, 6.0), 2),
                tool_seconds=round(rng.uniform(0.05, 3.0), 2),
                prompt_tokens=1200 + 900 * i,
                completion_tokens=rng.randint(40, 400),
            )
        )
    return steps


PATCH = """diff --git a/src/widgets/parse.py b/src/widgets/parse.py
index 3b18e51..a9c2f07 100644
--- a/src/widgets/parse.py
+++ b/src/widgets/parse.py
@@ -11,7 +11,7 @@ def parse(text, strict=False):
     items = text.split(",")
-    if len(items) > limit:
-        raise ValueError(text)
+    if len(items) >= limit:
+        raise ValueError(f"too many items: {text}")
     return items
"""


def build_corpus(store: Store, n_episodes: int = 36, seed: int = 0) -> Corpus:
    """Two repositories, three images (one failed), four tasks, ``n_episodes`` episodes of three models."""
    rng = random.Random(seed)
    images = [
        _image(store, "acme/widgets", "forager/acme-widgets:1"),
        _image(store, "attrs", "forager/attrs:23.1", tests_passed=1200, tests_total=1210),
        _image(
            store,
            "broken/pkg",
            "forager/broken-pkg:1",
            status=ImageStatus.FAILED,
            failure_class="no_tests_found",
            log_tail=f"ERROR: collected 0 items\n{HOSTILE}\n",
        ),
    ]
    tasks = store.add_tasks(
        [
            Task(
                instance_id=f"{name}-{i}",
                kind=kind,
                image_id=images[i % 2].id,
                status=TaskStatus.VERIFIED,
                problem_statement=f"parse() accepts one item too many ({name}).\n\n{HOSTILE}",
                gold_patch=PATCH,
                fail_to_pass=["tests/test_parse.py::test_limit"],
                pass_to_pass=[f"tests/test_parse.py::test_case_{k}" for k in range(5)],
                meta={"operator": operator} if operator else {"commit": "abc123"},
            )
            for i, (name, kind, operator) in enumerate(
                [
                    ("widgets-swap", TaskKind.MUTATE_FIX, "swap_comparison"),
                    ("attrs-flip", TaskKind.MUTATE_FIX, "flip_boolean"),
                    ("widgets-issue", TaskKind.ISSUE_FIX, None),
                    ("attrs-drop", TaskKind.MUTATE_FIX, "drop_statement"),
                ]
            )
        ]
    )
    start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    episodes = []
    for i in range(n_episodes):
        task = tasks[i % len(tasks)]
        model = MODELS[i % len(MODELS)]
        resolved = model == "oracle" or rng.random() < 0.45
        exit_reason = (
            "submitted" if resolved or rng.random() < 0.6 else rng.choice(["max_turns", "format_errors"])
        )
        n_steps = rng.randint(4, 30)
        created = start + timedelta(minutes=17 * i)
        outcome = "passed" if resolved else "failed"
        episode = Episode(
            task_id=task.id,
            model=model,
            policy="oracle" if model == "oracle" else None,
            action_format="function_calling" if i % 3 else "cwm_text",
            status=EpisodeStatus.COMPLETED,
            exit_reason=exit_reason,
            resolved=resolved,
            reward=1.0 if resolved else 0.0,
            prompt_tokens=sum(1200 + 900 * k for k in range(n_steps)),
            completion_tokens=rng.randint(2_000, 9_000),
            final_patch=PATCH,
            grade={
                "status": "resolved" if resolved else "unresolved",
                "resolved": resolved,
                "fail_to_pass": {"tests/test_parse.py::test_limit": outcome},
                "pass_to_pass": {f"tests/test_parse.py::test_case_{k}": "passed" for k in range(5)},
                "applied_with": "git apply",
                "infra_error": None,
                "exit_code": 0 if resolved else 1,
                "log_tail": "5 passed, 1 failed" if not resolved else "6 passed",
            },
            config={"max_turns": 30, "temperature": 0.0},
            system_prompt="You are a careful software engineer.",
            task_prompt=task.problem_statement,
            started_at=created - timedelta(seconds=n_steps * 7),
            finished_at=created,
            created_at=created,
        )
        episodes.append(store.save_episode(episode, _steps(rng, n_steps, hostile=i == 5)).id)
    stored = {episode.id: episode for episode in store.iter_episodes()}  # with task and steps loaded
    return Corpus(store, [stored[i] for i in episodes], stored[episodes[5]], tasks, images)


@pytest.fixture(scope="module")
def own_postgres(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this module's own on the test PostgreSQL server, dropped at the end (other tests
    share the server's test database)."""
    url = sa.make_url(request.getfixturevalue("postgres_url"))
    name = f"forager_viewer_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on SQLite, or on PostgreSQL in the module's own database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'forager.db'}"
    else:
        url = request.getfixturevalue("own_postgres")
        engine = sa.create_engine(url)
        metadata = sa.MetaData()
        metadata.reflect(engine)
        metadata.drop_all(engine)
        engine.dispose()
    with Store(url) as opened:
        yield opened


@pytest.fixture
def corpus(any_store: Store) -> Corpus:
    return build_corpus(any_store)


@pytest.fixture
def sqlite_corpus(store: Store) -> Corpus:
    return build_corpus(store)


# ---- a real server on loopback ----------------------------------------------------------------------------


class Server:
    """The viewer's aiohttp app served on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, app: web.Application) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = web.AppRunner(app)
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def server(corpus: Corpus) -> Iterator[Server]:
    running = Server(make_app(corpus.store))
    yield running
    running.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Answer:
    request = urllib.request.Request(url, headers=headers or {}, method=method)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return Answer(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read().decode())


class Links(HTMLParser):
    """The href of every ``<a>`` and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def hrefs(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.hrefs


def episode_ids(html: str) -> list[str]:
    """The episodes a listing shows, in order (each row links its episode once, by its short id)."""
    return re.findall(r'href="/episodes/([0-9a-f]{32})">', html)


# ---- pages over HTTP --------------------------------------------------------------------------------------


def test_every_page_answers_with_the_security_headers(corpus: Corpus, server: Server) -> None:
    episode, task, image = corpus.episodes[0], corpus.tasks[0], corpus.images[0]
    for path, expected in [
        ("/", "Resolve rate per repository"),
        ("/episodes", "36 episodes"),
        (f"/episodes/{episode.id}", "Final patch"),
        ("/tasks", "widgets-swap-0"),
        (f"/tasks/{task.id}", "Problem statement"),
        (f"/tasks/{task.instance_id}", "Problem statement"),
        ("/images", "no_tests_found"),
        (f"/images/{image.id}", "Build log (end)"),
        (f"/compare?a={corpus.episodes[0].id}&b={corpus.episodes[4].id}", "Two episodes side by side"),
    ]:
        answer = get(server.url + path)
        assert answer.status == 200, (path, answer.text[:500])
        assert expected in answer.text, path
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        assert "'unsafe-inline'" not in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    css = get(server.url + "/static/viewer.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    assert "Content-Security-Policy" in css.headers


def test_stored_text_is_escaped_everywhere(corpus: Corpus, server: Server) -> None:
    task, failed = corpus.tasks[0], corpus.images[2]
    for path in (
        f"/episodes/{corpus.hostile.id}",
        f"/tasks/{task.id}",
        f"/images/{failed.id}",
        "/episodes?q=pwned",
    ):
        html = get(server.url + path).text
        assert "pwned" in html, path  # shown ...
        assert "<script>document.title" not in html, path  # ... as text, never as markup
        assert "<img src=x" not in html and "<b>bold?</b>" not in html, path
        assert "&lt;script&gt;document.title" in html, path
        # The only scripts of any page are the viewer's own file.
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/viewer.js" defer>'], path


def test_an_episode_shows_each_tool_its_way(corpus: Corpus, server: Server) -> None:
    html = get(server.url + f"/episodes/{corpus.hostile.id}").text
    assert (
        '<pre class="shell"><span class="prompt">$ </span>grep -rn &#39;def parse&#39; src/ | head</pre>'
        in html
    )
    assert '<span class="d-del">-    if len(items) &gt; limit:' in html  # edit: a diff of old_str -> new_str
    assert '<span class="d-add">+    if len(items) &gt;= limit:' in html
    assert '<span class="tool-name">create</span> <code class="path">tests/test_limit.py</code>' in html
    assert 'class="tool-name bad">malformed call' in html and "&lt;tool: bash\nls" in html
    assert 'class="tool-name submit">submit' in html
    assert (
        '<span class="d-add">+        raise ValueError(f&#34;too many items: {text}&#34;)' in html
    )  # final patch
    assert "tests/test_parse.py::test_limit" in html and '<span class="outcome passed">passed</span>' in html
    assert "6/6 tests passed" in html
    long = [step for step in corpus.hostile.steps if step.observation.count("\n") > 25]
    assert html.count('<details class="obs">\n    <summary>observation ·') == len(long)


def test_filters_select_the_episodes_they_name(corpus: Corpus, server: Server) -> None:
    def shown(query: str) -> set[str]:
        return set(episode_ids(get(f"{server.url}/episodes?{query}").text))

    everything = {episode.id for episode in corpus.episodes}
    assert shown("") == everything
    assert shown("model=oracle") == {e.id for e in corpus.episodes if e.model == "oracle"}
    assert shown("resolved=no") == {e.id for e in corpus.episodes if e.resolved is False}
    assert (
        shown("repository=attrs&resolved=yes")
        == {e.id for e in corpus.episodes if e.resolved and e.task.image_id == corpus.images[1].id}
        != set()
    )
    assert shown("operator=swap_comparison") == {
        e.id for e in corpus.episodes if e.task_id == corpus.tasks[0].id
    }
    assert shown("kind=issue_fix") == {e.id for e in corpus.episodes if e.task_id == corpus.tasks[2].id}
    assert shown(f"task={corpus.tasks[1].id}") == {
        e.id for e in corpus.episodes if e.task_id == corpus.tasks[1].id
    }
    assert (
        shown("since=2026-11-20T12:00:00&until=2026-11-20T14:00")
        == {
            e.id
            for e in corpus.episodes
            if datetime(2026, 11, 20, 12, tzinfo=UTC) <= e.created_at < datetime(2026, 11, 20, 14, tzinfo=UTC)
        }
        != set()
    )
    assert shown("model=nobody") == set()


def test_search_finds_text_in_observations_and_actions(corpus: Corpus, server: Server) -> None:
    html = get(f"{server.url}/episodes?q=zebraquokka").text
    assert episode_ids(html) == [corpus.hostile.id]
    assert f'href="/episodes/{corpus.hostile.id}#step-1"' in html
    assert "<mark>ZebraQuokka</mark>" in html
    in_actions = {e.id for e in corpus.episodes if any(s.action == "<tool: bash\nls" for s in e.steps)}
    assert set(episode_ids(get(f"{server.url}/episodes?q=%3Ctool%3A+bash").text)) == in_actions != set()
    assert episode_ids(get(f"{server.url}/episodes?q=zebraquokka&model=gpt-4.1-mini").text) == []


def test_sorting_and_keyset_pages_cover_every_episode_once(
    corpus: Corpus, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "PAGE_SIZE", 5)
    for query, key in [
        ("sort=created&order=desc", lambda e: (e.created_at, e.id)),
        ("sort=turns&order=asc", lambda e: (-e.n_steps, "".join(chr(255 - ord(c)) for c in e.id))),
        ("sort=tokens&order=desc", lambda e: (e.prompt_tokens + e.completion_tokens, e.id)),
    ]:
        seen, url = [], f"{server.url}/episodes?{query}"
        while url:
            html = get(url).text
            seen += episode_ids(html)
            following = [href for href in hrefs(html) if "after=" in href]
            url = urljoin(server.url, following[0]) if following else ""
        assert seen == [e.id for e in sorted(corpus.episodes, key=key, reverse=True)], query


def test_search_pages_continue_where_the_budget_stopped(corpus: Corpus) -> None:
    wanted = [e.id for e in sorted(corpus.episodes, key=lambda e: (e.created_at, e.id), reverse=True)]
    wanted = [
        i
        for i in wanted
        if any("PASSED" in s.observation for s in next(e for e in corpus.episodes if e.id == i).steps)
    ]
    found, after = [], None
    while True:
        page = vq.search_page(corpus.store, None, "passed", after=after, limit=3, budget=4, batch=2)
        assert len(page.hits) <= 3 and page.scanned <= 4
        found += [hit.episode.id for hit in page.hits]
        if page.next_after is None:
            break
        after = page.next_after
    assert found == wanted


def test_histograms_count_every_selected_episode(corpus: Corpus) -> None:
    turns = vq.histogram(corpus.store, None, "turns", bins=5)
    assert sum(turns.counts) == len(corpus.episodes)
    assert turns.width in (1, 2, 5, 10) and turns.start <= min(e.n_steps for e in corpus.episodes)
    for i, count in enumerate(turns.counts):
        low = turns.start + i * turns.width
        assert count == sum(low <= e.n_steps < low + turns.width for e in corpus.episodes)
    oracle = vq.histogram(corpus.store, EpisodeFilter(model="oracle"), "tokens", bins=20)
    assert sum(oracle.counts) == sum(e.model == "oracle" for e in corpus.episodes)
    assert vq.histogram(corpus.store, EpisodeFilter(model="nobody"), "turns").counts == []


def test_bad_requests_are_pages_that_say_what_to_do(corpus: Corpus, server: Server) -> None:
    missing = get(server.url + "/episodes/0123")
    assert missing.status == 404 and "no episode &#39;0123&#39; in this store" in missing.text
    assert get(server.url + "/tasks/99999").status == 404
    assert get(server.url + "/images/tag").status == 404
    # Not ids though str.isdigit says so, or beyond an integer column (PostgreSQL refused them: a 500).
    for ref in ("%C2%B2", "99999999999999999999"):
        for kind in ("tasks", "images", "traces"):
            assert get(f"{server.url}/{kind}/{ref}").status == 404, (kind, ref)
    assert get(server.url + "/nowhere").status == 404
    bad = get(server.url + "/episodes?resolved=maybe")
    assert bad.status == 400 and "resolved=&#39;maybe&#39;: use yes or no" in bad.text
    assert get(server.url + "/episodes?sort=random").status == 400
    assert get(server.url + "/episodes?since=yesterday").status == 400
    assert get(server.url + "/episodes?after=unknown").status == 400
    assert get(server.url + "/compare?a=" + corpus.episodes[0].id).status == 400
    assert get(server.url + "/episodes", method="POST").status == 405
    # A page of another host name (DNS rebinding) does not get the store.
    assert get(server.url + "/", headers={"Host": "attacker.example:8080"}).status == 421
    assert get(server.url + "/", headers={"Host": "localhost:1234"}).status == 200


def test_a_token_guards_every_page(corpus: Corpus) -> None:
    guarded = Server(make_app(corpus.store, token="s3cret", loopback=False))
    try:
        assert get(guarded.url + "/").status == 401
        assert get(guarded.url + "/static/viewer.css").status == 401
        assert get(guarded.url + "/?token=wrong").status == 401
        entry = get(guarded.url + "/episodes?model=oracle&token=s3cret")
        assert entry.status == 302 and entry.headers["Location"] == "/episodes?model=oracle"
        cookie = entry.headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in entry.headers["Set-Cookie"]
        assert get(guarded.url + "/", headers={"Cookie": cookie}).status == 200
        assert get(guarded.url + "/", headers={"Authorization": "Bearer s3cret"}).status == 200
        assert get(guarded.url + "/", headers={"Host": "box.lan:8080", "Cookie": cookie}).status == 200
    finally:
        guarded.close()


def test_serving_beyond_loopback_needs_a_token(store: Store) -> None:
    with pytest.raises(ForagerError, match="pass --token"):
        serve(store, host="0.0.0.0", port=0)


# ---- static export ----------------------------------------------------------------------------------------


def test_export_writes_a_static_site_of_the_selection(corpus: Corpus, tmp_path: Path) -> None:
    site = tmp_path / "share" / "site"
    report = export_site(corpus.store, site, EpisodeFilter(model="gpt-4.1-mini"))
    chosen = [e for e in corpus.episodes if e.model == "gpt-4.1-mini"]
    assert report.episodes == len(chosen) and report.tasks == 4 and report.images == 2
    for episode in chosen:
        assert (site / "episodes" / f"{episode.id}.html").is_file()
    assert not (site / "episodes" / f"{corpus.hostile.id}.html").exists()  # an oracle episode
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert "<script>document.title" not in html
        for href in hrefs(html):
            target = urlparse(href)
            assert not target.scheme and not target.netloc and not href.startswith("/"), (page, href)
            if target.path:
                assert (page.parent / target.path).resolve().is_file(), (page, href)
    assert sorted(path.name for path in site.iterdir()) == [
        "episodes",
        "episodes.html",
        "images",
        "images.html",
        "index.html",
        "static",
        "tasks",
        "tasks.html",
        "traces.html",
    ]
    with pytest.raises(ForagerError, match="not empty"):
        export_site(corpus.store, site)


def test_export_command_writes_the_filtered_site(sqlite_corpus: Corpus, tmp_path: Path) -> None:
    corpus = sqlite_corpus
    url = corpus.store.url
    done = forager(
        "--db",
        url,
        "view",
        "--export",
        str(tmp_path / "out"),
        "--resolved",
        "--model",
        "oracle",
        home=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    oracle = [e for e in corpus.episodes if e.model == "oracle"]
    assert f"wrote {len(oracle)} episodes" in done.stdout
    assert len(list((tmp_path / "out" / "episodes").iterdir())) == len(oracle)
    refused = forager("--db", url, "view", "--export", str(tmp_path / "x"), "--since", "soon", home=tmp_path)
    assert refused.returncode == 2 and "Invalid value for '--since'" in refused.stderr


# ---- a real browser ---------------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
#: Where the browser tests also save their screenshots (the README's come from here), when set.
SCREENSHOTS_ENV = "FORAGER_VIEWER_SCREENSHOTS"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Debian's chromium, headless, driven through its chromedriver, with a fresh profile."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        message = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the browser tests (see scripts/test.sh)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_page_load_timeout(60)
    yield session
    session.quit()


def _screenshot(browser: object, name: str, tmp_path: Path) -> None:
    """A screenshot of the page as tall as its content (at most 2,400 px), kept with the test's files
    and, when ``FORAGER_VIEWER_SCREENSHOTS`` names a folder, there too."""
    browser.execute_script("window.scrollTo(0, 0)")  # the sticky header at the top, where it belongs
    height = browser.execute_script("return document.documentElement.scrollHeight")
    clip = {"x": 0, "y": 0, "width": 1400, "height": min(height, 2400), "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = tmp_path / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes().startswith(b"\x89PNG")
    if folder := os.environ.get(SCREENSHOTS_ENV):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def _nothing_injected_ran(browser: object, title: str) -> None:
    """The hostile text of the store is on the page as text, and none of its markup ran or exists."""
    assert browser.title == title
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('script:not([src]), img').length") == 0
    bold = "return Array.from(document.querySelectorAll('b')).filter(b => b.textContent === 'bold?').length"
    assert browser.execute_script(bold) == 0


def test_a_browser_walks_every_page_and_no_stored_script_runs(
    sqlite_corpus: Corpus, browser: object, tmp_path: Path
) -> None:
    corpus, server = sqlite_corpus, Server(make_app(sqlite_corpus.store))
    try:
        _walk(corpus, server, browser, tmp_path)
    finally:
        server.close()


def _walk(corpus: Corpus, server: Server, browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(server.url + "/")
    assert browser.title == "Dashboard · Forager"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")) > 20
    header = browser.find_element(By.CSS_SELECTOR, "header.top")
    assert header.value_of_css_property("background-color") == "rgba(27, 33, 53, 1)"  # the stylesheet loaded
    _screenshot(browser, "dashboard", tmp_path)

    # A filter: the menu submits itself (the viewer's own script runs under the policy).
    browser.get(server.url + "/episodes")
    Select(browser.find_element(By.NAME, "model")).select_by_visible_text("gpt-4.1-mini")
    wait.until(lambda b: "model=gpt-4.1-mini" in b.current_url)
    models = {
        cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.episodes tbody td:nth-child(4)")
    }
    assert models == {"gpt-4.1-mini"}
    _screenshot(browser, "episodes", tmp_path)

    # The search, from a fresh list, then its hit opens the trajectory at the matching step.
    browser.get(server.url + "/episodes")
    box = browser.find_element(By.NAME, "q")
    box.send_keys(NEEDLE.lower(), Keys.ENTER)
    wait.until(lambda b: "q=zebraquokka" in b.current_url)
    assert browser.find_element(By.CSS_SELECTOR, "tr.hit mark").text == NEEDLE
    _screenshot(browser, "search", tmp_path)
    browser.find_element(By.LINK_TEXT, "step #1").click()
    wait.until(lambda b: b.current_url.endswith(f"/episodes/{corpus.hostile.id}#step-1"))
    _nothing_injected_ran(browser, f"Episode {corpus.hostile.id[:12]} · Forager")
    observation = browser.find_element(By.CSS_SELECTOR, "#step-1 details.obs pre").text
    assert observation.startswith("<script>document.title = 'pwned'; window.pwned = 1;</script><img src=x")
    collapsed = browser.find_elements(By.CSS_SELECTOR, ".steps details.obs:not([open])")
    assert collapsed  # long observations start collapsed
    _screenshot(browser, "trajectory", tmp_path)
    browser.execute_script("window.scrollTo(0, 0)")  # the button sits above the step, under the header
    browser.find_element(By.CSS_SELECTOR, "button.toggle-all").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".steps details.obs:not([open])") == []

    # Two episodes of the task side by side.
    browser.find_element(By.CSS_SELECTOR, "form.compare-form button").click()
    wait.until(lambda b: "/compare?" in b.current_url)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".pair-head")) == 2
    _nothing_injected_ran(browser, browser.title)
    _screenshot(browser, "compare", tmp_path)

    for path, title, shot in [
        (f"/tasks/{corpus.hostile.task_id}", f"Task {corpus.hostile.task.instance_id} · Forager", "task"),
        ("/tasks", "Tasks · Forager", None),
        ("/images", "Images · Forager", "images"),
        (f"/images/{corpus.images[2].id}", "Image forager/broken-pkg:1 · Forager", None),
    ]:
        browser.get(server.url + path)
        _nothing_injected_ran(browser, title)
        if shot:
            _screenshot(browser, shot, tmp_path)


def test_a_browser_opens_the_exported_site_from_disk(
    sqlite_corpus: Corpus, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    corpus = sqlite_corpus
    export_site(corpus.store, tmp_path / "site")
    browser.get((tmp_path / "site" / "index.html").as_uri())
    assert browser.title == "Dashboard · Forager"
    header = browser.find_element(By.CSS_SELECTOR, "header.top")
    assert header.value_of_css_property("background-color") == "rgba(27, 33, 53, 1)"
    browser.find_element(By.LINK_TEXT, "Episodes").click()
    browser.find_element(By.LINK_TEXT, corpus.hostile.id[:12]).click()
    _nothing_injected_ran(browser, f"Episode {corpus.hostile.id[:12]} · Forager")
    browser.find_element(By.CSS_SELECTOR, "button.toggle-all").click()  # the script loaded from disk
    assert browser.find_elements(By.CSS_SELECTOR, ".steps details.obs:not([open])") == []


# ---- rendering, without a server ----------------------------------------------------------------------


def test_diff_lines_are_classified_by_the_hunk_counts() -> None:
    from forager.viewer.render import diff

    patch = (
        "--- a/x.sql\n+++ b/x.sql\n@@ -1,2 +1,2 @@\n"
        "--- a comment\n+++ another\n keep\n\\ No newline at end of file\n"
    )
    shown = diff(patch)
    assert [line.kind for line in shown.lines] == ["file", "file", "hunk", "del", "add", "ctx", "note"]
    assert (shown.files, shown.added, shown.removed) == (1, 1, 1)
    assert diff("not a diff at all").lines[0].kind == "file" and diff(None).lines == []


def test_actions_stored_in_unexpected_shapes_still_render() -> None:
    from forager.viewer.render import MAX_DIFF_CHARS, action_view, grade_view

    assert action_view({"tool": "bash", "arguments": ["ls"]}).kind == "other"
    assert action_view({"tool": "grep", "arguments": {"pattern": "x", "n": 3}}).arguments == {
        "pattern": "x",
        "n": "3",
    }
    huge = {"path": "a.py", "old_str": "x" * MAX_DIFF_CHARS, "new_str": "y"}
    assert action_view({"tool": "edit", "arguments": huge}).kind == "other"
    assert action_view({"tool": "edit", "arguments": {**huge, "old_str": "x"}}).kind == "edit"
    assert grade_view({"status": "error", "fail_to_pass": None, "pass_to_pass": ["odd"]}).tests == []
    assert grade_view(None) is None


def test_the_dashboard_is_computed_once_a_minute(corpus: Corpus, server: Server) -> None:
    def episodes_card(html: str) -> str:
        return re.search(r"<b>([\d,]+)</b><span>episodes", html).group(1)

    first = get(server.url + "/").text
    assert episodes_card(first) == "36" and "figures as of 20" in first
    task = corpus.tasks[0]
    extra = corpus.episodes[0]
    corpus.store.save_episode(
        Episode(
            task_id=task.id,
            model="late-model",
            action_format="function_calling",
            status=EpisodeStatus.COMPLETED,
            exit_reason="submitted",
            started_at=extra.started_at,
            finished_at=extra.finished_at,
        ),
        [],
    )
    assert get(server.url + "/").text == first  # the same figures, saying when they were computed
    assert episodes_card(get(server.url + "/?resolved=no").text) != "36"  # another selection: computed now
    assert "late-model" in get(server.url + "/episodes").text  # listings are always current


def test_images_and_tasks_listings_filter_and_page(
    corpus: Corpus, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = get(server.url + "/images?status=failed").text
    assert "forager/broken-pkg:1" in failed and "forager/attrs:23.1" not in failed
    attrs = get(server.url + "/images?repository=attrs").text
    assert "forager/attrs:23.1" in attrs and "forager/broken-pkg:1" not in attrs
    issue = get(server.url + "/tasks?kind=issue_fix").text
    assert "widgets-issue-2" in issue and "widgets-swap-0" not in issue
    swap = get(server.url + "/tasks?operator=swap_comparison").text
    assert "widgets-swap-0" in swap and "attrs-flip-1" not in swap
    assert get(server.url + "/tasks?status=bogus").status == 400
    assert get(server.url + "/images?status=bogus").status == 400
    monkeypatch.setattr(pages, "PAGE_SIZE", 3)
    seen, url = [], server.url + "/tasks"
    while url:
        html = get(url).text
        seen += re.findall(r'<td><a href="/tasks/\d+">([^<]+)</a></td>', html)
        following = [href for href in hrefs(html) if "after=" in href]
        url = urljoin(server.url, following[0]) if following else ""
    assert seen == [task.instance_id for task in reversed(corpus.tasks)]
