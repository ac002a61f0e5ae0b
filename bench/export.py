"""The episode store at scale: listings, streaming reads and statistics over 100k synthetic episodes.

    python bench/export.py [--episodes 100000] [--sqlite PATH] [--postgres URL] [--rebuild]

Builds (once; ``--rebuild`` to start over) a store of synthetic episodes with :func:`build_store` on
SQLite and, when a PostgreSQL URL is given (``--postgres`` or ``FORAGER_TEST_POSTGRES_URL``), on
PostgreSQL, then prints per backend (targets of issue 11):

- ``list_episodes`` p50 of one 100-row page, per filter and deep in the listing (target <= 20 ms);
- ``iter_episodes`` throughput (episodes/s, steps loaded) and peak RSS, measured in a fresh process
  (target: constant, <= 100 MiB);
- ``db stats`` p50 (``Store.stats``; target <= 1 s) and ``counts()``.

Other measurements plug in as sections: a function ``section(bench: Bench) -> None`` appended to
:data:`SECTIONS` that times what it wants with :meth:`Bench.time` or :meth:`Bench.in_child` and prints
with :meth:`Bench.report` (exports and dedup, viewer pages ...).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from storage import Episode, EpisodeFilter, Image, Step, Store, Task
from storage.engine import parse_url
from tools.definitions import openai_tools

MODELS = ["qwen2.5-coder-7b", "qwen2.5-coder-32b", "gpt-4.1-mini"]
OPERATORS = ["swap_compare", "negate_condition", "off_by_one", "drop_return", "swap_args", "wrong_operator"]
EXIT_REASONS = ["submitted"] * 80 + ["max_turns"] * 12 + ["format_errors"] * 3 + ["context_overflow"] * 3
WORDS = [
    "value",
    "result",
    "config",
    "path",
    "items",
    "count",
    "index",
    "token",
    "parser",
    "buffer",
    "node",
    "cache",
    "request",
    "response",
    "session",
    "handler",
    "record",
    "field",
    "schema",
    "offset",
    "limit",
    "state",
    "error",
    "module",
    "option",
    "target",
    "source",
]
#: Rows per INSERT statement while building.
INSERT_BATCH = 5_000


# ---- the synthetic store -------------------------------------------------------------------------


def build_store(
    url: str,
    episodes: int = 100_000,
    *,
    detailed: int = 2_000,
    detailed_steps: int = 30,
    cheap_steps: tuple[int, int] = (3, 20),
    repositories: int = 30,
    tasks_per_repository: int = 100,
    seed: int = 0,
) -> Store:
    """A store at ``url`` (empty or new) filled with ``episodes`` synthetic episodes, and opened.

    ``detailed`` of them, spread over the store, have ``detailed_steps`` steps with realistic 1-4 KB
    observations (test runs, file listings, tracebacks) and the assistant messages that made them; the
    others have ``cheap_steps`` (min, max) steps with one-line observations. Episodes are spread over the
    last 30 days across ``repositories`` x ``tasks_per_repository`` tasks (mutate-fix with an operator,
    and mined and imported issue-fix tasks), three models and the usual exit reasons. Rows are written
    with multi-row INSERTs through the models' own column types. Deterministic for a ``seed``.
    """
    rng = random.Random(seed)
    store = Store(url)
    repo_ids = []
    for r in range(repositories):  # package names and owner/name ones, half each
        source, name = (
            (f"pypi:pkg{r}==1.0", f"pypi/pkg{r}") if r % 2 else (f"/src/repo{r}", f"owner{r}/repo{r}")
        )
        repo_ids.append(store.get_or_create_repository(source, name, "c0").id)
    with store.session() as session:
        image_rows = [_image_row(repo_id) for repo_id in repo_ids]
        image_ids = list(session.scalars(sa.insert(Image).returning(Image.id), image_rows))
        task_rows = [
            _task_row(rng, image_id, i) for image_id in image_ids for i in range(tasks_per_repository)
        ]
        for start in range(0, len(task_rows), INSERT_BATCH):
            session.execute(sa.insert(Task), task_rows[start : start + INSERT_BATCH])
        task_ids = list(session.scalars(sa.select(Task.id)))
    every = max(1, episodes // detailed) if detailed else episodes + 1
    start_time = datetime.now(UTC) - timedelta(days=30)
    spacing = timedelta(days=30) / episodes
    system_prompt = "You are a careful software engineer fixing a bug in a repository. " * 20
    tools = openai_tools()
    batch: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for i in range(episodes):
        rich = i % every == every // 2
        n_steps = detailed_steps if rich else rng.randint(*cheap_steps)
        episode = _episode_row(rng, rng.choice(task_ids), start_time + i * spacing, n_steps)
        episode.update(
            system_prompt=system_prompt, tools=tools if episode["action_format"] != "cwm_text" else None
        )
        batch.append(episode)
        steps += (_rich_step if rich else _cheap_step)(rng, episode["id"], n_steps)
        if len(batch) >= INSERT_BATCH or i == episodes - 1:
            with store.session() as session:
                # RETURNING makes it multi-row INSERTs: PostgreSQL's statistics triggers run once per
                # statement, and one statement per row would run them 5,000 times a batch.
                session.execute(sa.insert(Episode).returning(Episode.id), batch)
                for start in range(0, len(steps), INSERT_BATCH * 4):
                    session.execute(sa.insert(Step), steps[start : start + INSERT_BATCH * 4])
            batch, steps = [], []
    if store.url.startswith("postgresql"):  # as autovacuum would, soon after a bulk load
        engine = sa.create_engine(parse_url(url), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
        engine.dispose()
    return store


def _image_row(repository_id: int) -> dict[str, Any]:
    baseline = {f"tests/test_m{k}.py::test_case_{j}": "passed" for k in range(20) for j in range(40)}
    return {
        "repository_id": repository_id,
        "tag": f"forager/r{repository_id}:c0",
        "status": "ready",
        "base_image": "forager/base:bookworm",
        "recipe": {"install": ["pip install -e ."]},
        "recipe_hash": f"{repository_id:08x}",
        "test_command": "python -m pytest",
        "baseline": baseline,
        "tests_passed": len(baseline),
        "tests_total": len(baseline),
    }


def _task_row(rng: random.Random, image_id: int, i: int) -> dict[str, Any]:
    kind = "mutate_fix" if i % 5 else "issue_fix"
    operator = rng.choice(OPERATORS) if kind == "mutate_fix" else None
    meta: dict[str, Any] = {"operator": operator, "file": "src/pkg/core.py", "line": rng.randint(1, 900)}
    if kind == "issue_fix":
        meta = {"commit": f"{rng.getrandbits(160):040x}"} if i % 10 else {"repo": "o/r", "version": "1.0"}
    failing = [f"tests/test_m{rng.randrange(20)}.py::test_case_{rng.randrange(40)}" for _ in range(3)]
    return {
        "instance_id": f"img{image_id}-{kind}-{i}",
        "kind": kind,
        "image_id": image_id,
        "status": "verified",
        "setup_patch": _diff(rng),
        "gold_patch": _diff(rng),
        "test_patch": "",
        "problem_statement": " ".join(rng.choices(WORDS, k=120)),
        "fail_to_pass": failing,
        "pass_to_pass": [f"tests/test_m{k}.py::test_case_{j}" for k in range(5) for j in range(20)],
        "meta": meta,
        "operator": operator,
    }


def _episode_row(rng: random.Random, task_id: int, created_at: datetime, n_steps: int) -> dict[str, Any]:
    model = rng.choice(MODELS)
    exit_reason = rng.choice(EXIT_REASONS)
    graded = rng.random() > 0.03
    resolved = graded and exit_reason == "submitted" and rng.random() < 0.2 + 0.15 * MODELS.index(model)
    prompt_tokens = sum(rng.randint(1500, 4000) for _ in range(n_steps))
    return {
        "id": f"{rng.getrandbits(128):032x}",
        "task_id": task_id,
        "model": model,
        "action_format": "cwm_text" if rng.random() < 0.1 else "function_calling",
        "status": "completed" if graded else "failed",
        "exit_reason": exit_reason if graded else "infra_error",
        "resolved": resolved if graded else None,
        "reward": float(resolved) if graded else None,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n_steps * rng.randint(50, 400),
        "n_steps": n_steps,
        "final_patch": _diff(rng),
        "grade": {"status": "resolved" if resolved else "unresolved"},
        "config": {"max_turns": 64, "temperature": 0.7},
        "task_prompt": " ".join(rng.choices(WORDS, k=150)),
        "started_at": created_at - timedelta(minutes=5),
        "finished_at": created_at,
        "created_at": created_at,
    }


def _cheap_step(rng: random.Random, episode_id: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "episode_id": episode_id,
            "index": k,
            "thought": None,
            "observation": "ok",
            "action": {"tool": "bash", "arguments": {"command": "ls"}},
        }
        for k in range(n)
    ]


def _rich_step(rng: random.Random, episode_id: str, n: int) -> list[dict[str, Any]]:
    rows = []
    for k in range(n):
        command = f"python -m pytest -q tests/test_m{rng.randrange(20)}.py"
        call_id = f"call_{rng.getrandbits(48):012x}"
        thought = f"The failure points at {rng.choice(WORDS)}_{rng.choice(WORDS)}; let me check it."
        message = {
            "role": "assistant",
            "content": thought,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "bash", "arguments": json.dumps({"command": command})},
                }
            ],
        }
        rows.append(
            {
                "episode_id": episode_id,
                "index": k,
                "thought": thought,
                "message": message,
                "action": {"tool": "bash", "arguments": {"command": command}},
                "observation": _observation(rng),
                "model_seconds": rng.uniform(0.5, 8),
                "tool_seconds": rng.uniform(0.05, 5),
                "prompt_tokens": rng.randint(1500, 4000),
                "completion_tokens": rng.randint(50, 400),
            }
        )
    return rows


def _code_line(rng: random.Random) -> str:
    a, b, c = rng.choices(WORDS, k=3)
    return rng.choice(
        [
            f"    {a} = {b}.get_{c}({rng.randint(0, 99)})",
            f"    if {a} is None or {b} > {c}:",
            f"        return {a}_{b}({c}, default={rng.randint(0, 9)})",
            f"def {a}_{b}(self, {c}):",
            f"    for {a} in self.{b}s:",
            f"        raise ValueError(f'bad {a}: {{{b}!r}}')",
        ]
    )


def _observation(rng: random.Random) -> str:
    """1-4 KB of tool output: a test run with a traceback, a numbered file, or grep hits."""
    target = rng.randint(1000, 4000)
    kind = rng.randrange(3)
    lines: list[str] = []
    size = 0
    while size < target:
        n = len(lines)
        if kind == 0:
            test = f"tests/test_m{rng.randrange(20)}.py::test_{rng.choice(WORDS)}_{n}"
            lines.append(f"{test} {rng.choice(['PASSED', 'PASSED', 'PASSED', 'FAILED'])}")
            if rng.random() < 0.1:
                lines += [
                    _code_line(rng),
                    f"E   AssertionError: {rng.randint(0, 999)} != {rng.randint(0, 999)}",
                ]
        elif kind == 1:
            lines.append(f"{n + 1:6}\t{_code_line(rng)}")
        else:
            lines.append(f"src/pkg/{rng.choice(WORDS)}.py:{rng.randint(1, 900)}:{_code_line(rng)}")
        size += sum(len(line) + 1 for line in lines[n:])
    return "\n".join(lines)[:target]


def _diff(rng: random.Random) -> str:
    line = _code_line(rng)
    return f"--- a/src/pkg/core.py\n+++ b/src/pkg/core.py\n@@ -10,3 +10,3 @@\n-{line}\n+{line} + 1\n"


# ---- measuring -----------------------------------------------------------------------------------


@dataclass
class Bench:
    """One backend's store under measurement, and how sections report on it."""

    label: str
    url: str
    store: Store

    def time(self, action: Callable[[], object], repeat: int = 20) -> tuple[float, float]:
        """Median seconds ``action`` takes over ``repeat`` runs after a warm-up: (wall, CPU of this process).

        The CPU time is what the work costs here (all of it on SQLite, the client's share on PostgreSQL);
        the wall time also counts waiting, for the database server or for other processes on the machine.
        """
        action()
        wall, cpu = [], []
        for _ in range(repeat):
            started, used = time.perf_counter(), time.process_time()
            action()
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - used)
        return statistics.median(wall), statistics.median(cpu)

    def in_child(self, function: str, *args: str) -> dict[str, Any]:
        """Run ``module:function(url, *args)`` in a fresh Python process; its returned dict, plus
        ``peak_rss_mib`` (the process's high-water mark) and ``start_rss_mib`` (just before the call).

        What a separate process shows that this one cannot: memory of one job from a clean start.
        """
        result = subprocess.run(
            [sys.executable, __file__, "--child", function, self.url, *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        return json.loads(result.stdout.splitlines()[-1])

    def report(self, what: str, value: float | tuple[float, float], unit: str, target: str = "") -> None:
        """One line: ``value`` in ``unit`` ("s" prints milliseconds; a (wall, CPU) pair prints both)."""
        if isinstance(value, tuple):
            shown = f"{value[0] * 1000:8.1f} ms (cpu {value[1] * 1000:.1f})"
        elif unit == "s":
            shown = f"{value * 1000:8.1f} ms"
        else:
            shown = f"{value:8.1f} {unit}"
        print(f"  {self.label:<10} {what:<48} {shown:<26} {target}", flush=True)


def iterate_all(url: str, *args: str) -> dict[str, Any]:
    """Child job: stream every episode with its steps; episodes/s and steps seen."""
    store = Store(url)
    started, episodes, steps = time.perf_counter(), 0, 0
    for episode in store.iter_episodes(EpisodeFilter(), with_steps=True):
        episodes += 1
        steps += len(episode.steps)
    seconds = time.perf_counter() - started
    return {"episodes": episodes, "steps": steps, "seconds": seconds}


def listing(bench: Bench) -> None:
    """``list_episodes``: one 100-row page per filter, and a page deep into the listing."""
    since = datetime.now(UTC) - timedelta(days=1)
    middle = bench.store.list_episodes(EpisodeFilter(since=datetime.now(UTC) - timedelta(days=15)), limit=1)
    filters: list[tuple[str, EpisodeFilter, str | None]] = [
        ("first page, no filter", EpisodeFilter(), None),
        ("deep page (after the middle episode)", EpisodeFilter(), middle[0].id),
        ("model", EpisodeFilter(model=MODELS[0]), None),
        ("model + resolved", EpisodeFilter(model=MODELS[0], resolved=True), None),
        (
            "resolved=False + exit_reason=max_turns",
            EpisodeFilter(resolved=False, exit_reason="max_turns"),
            None,
        ),
        ("exit_reason=context_overflow", EpisodeFilter(exit_reason="context_overflow"), None),
        ("repository", EpisodeFilter(repository="owner4/repo4"), None),
        ("operator", EpisodeFilter(operator=OPERATORS[0]), None),
        ("task kind issue_fix + model", EpisodeFilter(task_kind="issue_fix", model=MODELS[1]), None),
        ("since yesterday", EpisodeFilter(since=since), None),
    ]
    for name, selection, after in filters:
        seconds = bench.time(lambda s=selection, a=after: bench.store.list_episodes(s, limit=100, after=a))
        bench.report(f"list_episodes p50: {name}", seconds, "s", "target <= 20 ms")
    # The viewer's listing (storage/viewer_queries.py): newest first, or by turns, with the total it shows.
    from storage import viewer_queries

    for name, selection, sort in [
        ("newest first", EpisodeFilter(), "created"),
        ("newest first, model + resolved", EpisodeFilter(model=MODELS[0], resolved=True), "created"),
        ("by turns", EpisodeFilter(), "turns"),
    ]:
        seconds = bench.time(lambda f=selection, s=sort: viewer_queries.episode_page(bench.store, f, sort=s))
        bench.report(f"viewer episode_page p50: {name}", seconds, "s")
        if sort == "created":
            seconds = bench.time(lambda f=selection: bench.store.count_episodes(f))
            bench.report(f"  ... count_episodes p50: {name}", seconds, "s")


def streaming(bench: Bench) -> None:
    """``iter_episodes`` over the whole store, with steps, in a fresh process; and what the machine's
    load was meanwhile (other processes slow the wall-clock figures down)."""
    bench.report("load average (1 min) before", os.getloadavg()[0], "")
    result = bench.in_child("export:iterate_all")
    bench.report("iter_episodes (with steps): episodes/s", result["episodes"] / result["seconds"], "ep/s")
    bench.report(f"  ... {result['episodes']} episodes, {result['steps']} steps, in", result["seconds"], "s")
    bench.report("iter_episodes: RSS before iterating", result["start_rss_mib"], "MiB")
    bench.report("iter_episodes: peak RSS", result["peak_rss_mib"], "MiB", "target <= 100 MiB, constant")


def statistics_section(bench: Bench) -> None:
    """``db stats`` and ``counts()``."""
    bench.report("db stats p50 (all episodes)", bench.time(bench.store.stats, repeat=5), "s", "target <= 1 s")
    model = EpisodeFilter(model=MODELS[0])
    bench.report("db stats p50 (one model)", bench.time(lambda: bench.store.stats(model), repeat=5), "s")
    bench.report("counts() p50", bench.time(bench.store.counts, repeat=5), "s")


def viewer_pages(bench: Bench) -> None:
    """``forager view``: p50 of whole HTTP requests (server, queries, templates) on loopback."""
    import asyncio
    import threading
    import urllib.request

    from aiohttp import web

    from forager.viewer import make_app
    from storage import viewer_queries

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(make_app(bench.store))

    async def start() -> str:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    base = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    (longest,) = viewer_queries.episode_page(bench.store, None, sort="turns", limit=1)
    middle = bench.store.list_episodes(EpisodeFilter(since=datetime.now(UTC) - timedelta(days=15)), limit=1)
    pages = [
        ("episode list, first page", "/episodes", 20),
        ("episode list, model + resolved", f"/episodes?model={MODELS[0]}&resolved=yes", 20),
        ("episode list, deep page", f"/episodes?order=asc&after={middle[0].id}", 20),
        ("episode list, sorted by turns", "/episodes?sort=turns", 10),
        (f"trajectory ({longest.n_steps} steps)", f"/episodes/{longest.id}", 20),
        ("search in steps (one page)", "/episodes?q=AssertionError", 5),
        ("dashboard, computed", "/?fresh={n}", 3),  # a new address each time: not the minute's copy
        ("dashboard, its copy for the minute", "/", 5),
    ]
    try:
        for name, path, repeat in pages:

            def fetch(path: str = path, calls: list[int] = []) -> None:  # noqa: B006 (a counter)
                calls.append(1)
                with urllib.request.urlopen(base + path.format(n=len(calls)), timeout=120) as response:
                    response.read()

            bench.report(f"viewer page p50: {name}", bench.time(fetch, repeat=repeat), "s")
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def export_format(url: str, format_name: str, out: str) -> dict[str, Any]:
    """Child job: ``forager export FORMAT`` of every episode of the store to ``out``."""
    from forager.exports import export

    started = time.perf_counter()
    summary = export(Store(url).iter_episodes(), format_name, out)
    return {"episodes": summary.read, "seconds": time.perf_counter() - started, "bytes": summary.bytes}


def dedup_all(url: str) -> dict[str, Any]:
    """Child job: near-duplicate filtering of every trajectory; the time deciding, apart from reading."""
    from forager.dedup import NearDuplicateFilter

    dedup = NearDuplicateFilter()
    started, deciding, actions = time.perf_counter(), 0.0, 0
    for episode in Store(url).iter_episodes():
        steps = [step.action for step in episode.steps]
        actions += len(steps)
        decided = time.perf_counter()
        dedup.keep(str(episode.task_id), episode.task.image.repository.name, steps)
        deciding += time.perf_counter() - decided
    report = dedup.report
    return {
        "episodes": report.kept + report.dropped,
        "dropped": report.dropped,
        "actions": actions,
        "deciding": deciding,
        "seconds": time.perf_counter() - started,
    }


def exports(bench: Bench) -> None:
    """``forager export`` sft and parquet of the whole store, and ``--dedup``, each in a fresh process."""
    import tempfile

    target = "target <= 200 MiB, constant"
    for format_name in ("sft", "parquet"):
        with tempfile.TemporaryDirectory() as folder:
            result = bench.in_child("export:export_format", format_name, str(Path(folder) / "out"))
        megabytes = result["bytes"] / 2**20
        bench.report(f"export {format_name}: episodes/s", result["episodes"] / result["seconds"], "ep/s")
        bench.report(f"  ... {result['episodes']} episodes, {megabytes:.0f} MiB in", result["seconds"], "s")
        bench.report(f"export {format_name}: peak RSS", result["peak_rss_mib"], "MiB", target)
    result = bench.in_child("export:dedup_all")
    trajectories, deciding = result["episodes"], result["deciding"]
    bench.report("dedup: trajectories decided/s (reading apart)", trajectories / deciding, "/s")
    bench.report(f"  ... {trajectories} trajectories, {result['actions']} actions", deciding, "s")
    bench.report(f"  ... {result['dropped']} dropped; with reading, in all", result["seconds"], "s")
    bench.report("dedup: peak RSS", result["peak_rss_mib"], "MiB")


def _variant(rng: random.Random, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A resampling of ``actions``: a quarter of the steps changed, one in twenty left out."""
    out: list[dict[str, Any]] = []
    for action in actions:
        draw = rng.random()
        if draw < 0.25:
            command = f"grep -n {rng.choice(WORDS)} src/{draw}.py"
            out.append({"tool": "bash", "arguments": {"command": command}})
        elif draw > 0.05 + 0.25:
            out.append(action)
    return out


def _pytest_action(word: str, k: int) -> dict[str, Any]:
    return {"tool": "bash", "arguments": {"command": f"pytest tests/test_{word}.py -k case_{k}"}}


def dedup_methods(bench: Bench) -> None:
    """Near-duplicate decisions per second: ``NearDuplicateFilter`` (each signature compared with the kept
    ones of its task, all at once) against datasketch's ``MinHashLSH`` (an index per task, its candidates
    checked against the threshold), on the same signatures; and how many decisions differ (pairs the LSH
    banding misses). Synthetic trajectories of 20 actions, eight near-copies of each distinct one."""
    from datasketch import MinHashLSH

    from forager.dedup import NearDuplicateFilter

    if bench.label != "sqlite":  # no store involved: once is enough
        return
    for per_task, tasks in ((8, 500), (64, 100), (512, 10), (4096, 2)):
        rng = random.Random(per_task)
        groups: list[tuple[str, list[dict[str, Any]]]] = []
        for task in range(tasks):
            originals = [
                [_pytest_action(rng.choice(WORDS), k) for k in rng.sample(range(1000), 20)]
                for _ in range(max(1, per_task // 8))
            ]
            groups += [(str(task), _variant(rng, rng.choice(originals))) for _ in range(per_task)]
        direct = NearDuplicateFilter()
        signatures = [direct.signature(actions) for _, actions in groups]
        started = time.perf_counter()
        pairs = list(zip((task for task, _ in groups), signatures, strict=True))
        kept_direct = [direct.keep_signature(task, "r", signature) for task, signature in pairs]
        direct_seconds = time.perf_counter() - started
        # The band layout is computed once (an integration, ~0.1 s), not per task's index.
        params = MinHashLSH(threshold=direct.threshold, num_perm=128)
        indexes: dict[str, MinHashLSH] = {}
        started = time.perf_counter()
        kept_lsh = []
        for key, (task, signature) in enumerate(pairs):
            index = indexes.setdefault(
                task, MinHashLSH(threshold=direct.threshold, num_perm=128, params=(params.b, params.r))
            )
            similar = any(
                signature.jaccard(signatures[c]) >= direct.threshold for c in index.query(signature)
            )
            if not similar:
                index.insert(key, signature)
            kept_lsh.append(not similar)
        lsh_seconds = time.perf_counter() - started
        differ = sum(a != b for a, b in zip(kept_direct, kept_lsh, strict=True))
        what = f"dedup {per_task:>4}/task x {tasks:>3}"
        bench.report(f"{what}: direct, decisions/s", len(groups) / direct_seconds, "/s")
        bench.report(f"{what}: MinHashLSH, decisions/s", len(groups) / lsh_seconds, "/s")
        dropped = f"/ {kept_lsh.count(False)}, {differ} decisions differ"
        bench.report(f"{what}: dropped direct / LSH", kept_direct.count(False), dropped)


#: What the benchmark measures, in order; append a section to measure more.
SECTIONS: list[Callable[[Bench], None]] = [listing, streaming, statistics_section]
SECTIONS.append(viewer_pages)
SECTIONS.append(exports)
SECTIONS.append(dedup_methods)


def _memory_mib(field: str) -> float:
    """A memory figure of this process from /proc: ``VmRSS`` (now) or ``VmHWM`` (the peak so far)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(function: str, url: str, args: list[str]) -> None:
    module, name = function.split(":")
    # This file runs as __main__ in the child: its own functions are in globals().
    target = (
        globals()[name] if module == Path(__file__).stem else getattr(importlib.import_module(module), name)
    )
    start = _memory_mib("VmRSS")
    result = target(url, *args)
    print(json.dumps({**result, "start_rss_mib": start, "peak_rss_mib": _memory_mib("VmHWM")}))


def _stores(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    yield "sqlite", f"sqlite:///{args.sqlite.resolve()}"
    postgres = args.postgres or os.environ.get("FORAGER_TEST_POSTGRES_URL")
    if postgres:
        yield "postgresql", postgres


def _open(label: str, url: str, args: argparse.Namespace) -> Store:
    """The benchmark store at ``url``, built unless it holds the wanted number of episodes already."""
    if args.rebuild:
        if label == "sqlite":
            args.sqlite.unlink(missing_ok=True)
        else:
            engine = sa.create_engine(parse_url(url))
            metadata = sa.MetaData()
            metadata.reflect(engine)
            metadata.drop_all(engine)
            engine.dispose()
    store = Store(url, upgrade=True)  # a benchmark store follows the schema without asking
    if store.counts()["episodes"] == args.episodes:
        return store
    if store.counts()["episodes"]:
        raise SystemExit(f"{store.url} holds another store: pass --rebuild to replace it")
    store.close()
    started = time.perf_counter()
    store = build_store(url, args.episodes)
    print(
        f"  {label:<10} built {args.episodes} episodes in {time.perf_counter() - started:.0f} s", flush=True
    )
    return store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--sqlite", type=Path, default=Path(".forager-bench/export.db"))
    parser.add_argument("--postgres", help="URL of a PostgreSQL database to fill (emptied with --rebuild)")
    parser.add_argument(
        "--rebuild", action="store_true", help="drop the benchmark stores and build them again"
    )
    parser.add_argument(
        "--section",
        action="append",
        choices=[section.__name__ for section in SECTIONS],
        help="measure only this section (repeatable; default: all)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.child[2:])
        return
    for label, url in _stores(args):
        store = _open(label, url, args)
        bench = Bench(label, url, store)
        for section in SECTIONS:
            if not args.section or section.__name__ in args.section:
                section(bench)
        store.close()


if __name__ == "__main__":
    main()
