"""History benchmark (issue #12): build real repositories at old commits and mine their history.

    python -m bench.history --mirror /work/.mirror [--corpus bench/history_corpus.txt]
                            [--home .forager-history] [--ages 0 3 6] [--mine-commits 100]
                            [--max-tasks 5] [--only OWNER/NAME ...] [--no-mine]

Each corpus line names a public repository ``OWNER/NAME``. Its code is never part of this project:
the benchmark reads a full-history snapshot from ``MIRROR/OWNER+NAME/repo`` (a bare repository, as
the session's snapshot tool leaves them; ``git clone --mirror URL MIRROR/OWNER+NAME/repo`` makes one)
and clones it into ``HOME/clones``.

For every repository it builds the newest commit and, for each age in ``--ages`` (years), the last
commit of the first-parent history at least that old (a repository younger than that has none), with
the builder's defaults: lock files first, unpinned requirements resolved as of the commit's date.
Then it mines up to ``--max-tasks`` issue-fix tasks from the newest ``--mine-commits`` commits
(environments reused across commits whose installs are planned alike) and grades every mined
task again from scratch: the gold patch must resolve it and the untouched start must not. Mining
figures come from HOME's store, not from one run's memory, so a resumed run counts what earlier runs
tried and built: tasks stored, candidates tried (tasks plus those rejected for good), image builds
for mining (every full build of the repository but those of the benchmark's own commits, newest and
aged, that no layer sits on) and layers. Each repository's line is printed as soon as it is done;
``--report-only`` builds and mines nothing: it prints the mining figures of what the store holds,
re-grading its tasks.

Targets (issue #12): >= 85% build success at the newest commit, >= 95% at three-year-old and >= 80%
at six-year-old commits, 100% of mined tasks verified on re-grade, <= 0.5 builds per mined task.
The run resumes: images and tasks already in HOME's store are reused.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import git

from envs.backend import make_backend
from envs.candidates import candidate_commits
from envs.mine import mine, rejected_candidates
from envs.tasks import verify
from images.builder import BuildOptions, BuildResult, ImageBuilder
from images.engine import connect
from images.layers import LAYER_NOTE
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import ImageStatus, Store


@dataclass
class Outcome:
    """One repository's figures."""

    name: str
    builds: dict[int, BuildResult | None] = field(default_factory=dict)
    """Age in years → the build of that commit (None: the history is younger than that)."""
    commits_walked: int = 0
    candidates: int = 0
    tried: int = 0
    tasks: int = 0
    mine_builds: int = 0
    """Full image builds for mining (installs), failed ones included."""
    layers: int = 0
    verified: int = 0
    regraded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    error: str = ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path(__file__).with_name("history_corpus.txt"))
    parser.add_argument("--mirror", type=Path, required=True, help="folder of OWNER+NAME/repo snapshots")
    parser.add_argument("--home", type=Path, default=Path(".forager-history"))
    parser.add_argument("--ages", type=int, nargs="*", default=[3, 6], help="years back (newest always)")
    parser.add_argument("--mine-commits", type=int, default=100)
    parser.add_argument("--max-tasks", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--no-mine", action="store_true", help="builds only")
    parser.add_argument(
        "--report-only", action="store_true", help="no builds or mining: the store's figures, re-graded"
    )
    args = parser.parse_args()

    names = _corpus(args.corpus)
    if args.only:
        names = [n for n in names if n in args.only]
    args.home.mkdir(parents=True, exist_ok=True)
    client = connect(timeout=3600)
    store = Store(f"sqlite:///{(args.home / 'forager.db').resolve()}", upgrade=True)
    builder = ImageBuilder(
        client, store, args.home, BuildOptions(network=NetworkSettings.from_environment()), progress=_print
    )
    backend = make_backend("docker", client=client)
    ages = [0, *sorted(set(args.ages) - {0})]
    outcomes = []
    started = time.monotonic()
    for name in names:
        outcome = Outcome(name)
        outcomes.append(outcome)
        snapshot = args.mirror / name.replace("/", "+") / "repo"
        if not snapshot.is_dir():
            outcome.error = f"no snapshot at {snapshot}"
            print(f"{name}: skipped, {outcome.error}", flush=True)
            continue
        clone = _clone(snapshot, args.home / "clones" / name.replace("/", "__"))
        if not args.report_only:
            for age in ages:
                commit = _commit_aged(clone, age)
                outcome.builds[age] = builder.build(parse_source(f"{clone}@{commit}")) if commit else None
            if not args.no_mine:
                _mine(outcome, builder, backend, store, clone, args)
        if not args.no_mine:
            _mining_figures(outcome, backend, store, clone, ages, args)
            print(
                f"{name}: {outcome.tasks} tasks, {outcome.tried} tried of {outcome.candidates} candidates, "
                f"{outcome.mine_builds} builds, {outcome.layers} layers, verified {outcome.verified}/"
                f"{outcome.regraded}, skipped {outcome.skipped or '-'}",
                flush=True,
            )
    wall = time.monotonic() - started
    _report(outcomes, ages, wall, mined=not args.no_mine)
    backend.close()
    store.close()


def _corpus(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _clone(snapshot: Path, dest: Path) -> Path:
    """A working clone of ``snapshot`` (made once; objects shared by hard links)."""
    if not (dest / ".git").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", str(snapshot), str(dest)], check=True)
    return dest


def _commit_aged(repo: Path, years: int) -> str | None:
    """The newest first-parent commit at least ``years`` older than HEAD; None if history is younger."""
    if years == 0:
        return _git(repo, "rev-parse", "HEAD")
    newest = datetime.fromtimestamp(int(_git(repo, "log", "-1", "--format=%ct", "HEAD")), UTC)
    before = newest - timedelta(days=365 * years)
    found = _git(repo, "rev-list", "-1", "--first-parent", f"--before={before.isoformat()}", "HEAD")
    return found or None


def _mine(outcome: Outcome, builder: ImageBuilder, backend, store: Store, clone: Path, args) -> None:
    try:
        report = mine(
            builder, backend, store, parse_source(str(clone)),
            max_tasks=args.max_tasks, max_commits=args.mine_commits,
        )  # fmt: skip
    except Exception as exc:  # a benchmark reports a repository it cannot mine and goes on
        outcome.error = f"mining failed: {exc}"
        print(f"{outcome.name}: {outcome.error}", flush=True)
        return
    for skip in report.skipped:
        if not skip.lasting:  # journaled skips are counted from the journal; these are not
            _count_skip(outcome, skip.reason)


def _count_skip(outcome: Outcome, reason: str) -> None:
    key = reason.split(":")[0][:60]  # the reason without its particulars
    outcome.skipped[key] = outcome.skipped.get(key, 0) + 1


def _mining_figures(outcome: Outcome, backend, store: Store, clone: Path, ages: list[int], args) -> None:
    """What mining this repository has given so far, from the store and the journal of rejections; the
    builds of the benchmark's own commits (newest and aged) are not mining's unless it layered over them."""
    prefix = clone.name + "."
    aged = {_commit_aged(clone, age) for age in ages}
    outcome.commits_walked = args.mine_commits
    outcome.candidates = len(candidate_commits(git.Repo(clone), max_commits=args.mine_commits))
    tasks = [task for task in store.list_tasks() if task.instance_id.startswith(prefix)]
    outcome.tasks = len(tasks)
    rejected = [why for task, why in rejected_candidates(args.home).items() if task.startswith(prefix)]
    outcome.tried = outcome.tasks + len(rejected)
    for reason in rejected:
        _count_skip(outcome, reason)
    images = store.list_images(name=clone.name)
    layers = [image for image in images if (image.log_tail or "").startswith(LAYER_NOTE)]
    # A layer's note names its base: a benchmark's own build that mining layered over is mining's too.
    bases = {image.log_tail.removeprefix(LAYER_NOTE).split(": ", 1)[0] for image in layers}
    outcome.layers = len(layers)
    for image in images:
        if image not in layers and (image.repository.commit not in aged or image.tag in bases):
            outcome.mine_builds += 1
    for task in tasks:
        outcome.regraded += 1
        outcome.verified += verify(backend, task, task.image, timeout=900).ok


def _report(outcomes: list[Outcome], ages: list[int], wall: float, *, mined: bool) -> None:
    print()
    heads = "".join(f" {('newest' if a == 0 else f'-{a}y'):<24}" for a in ages)
    print(f"{'repository':<34}{heads} {'cand':>5} {'tried':>5} {'tasks':>5} {'builds':>6}")
    for o in outcomes:
        cells = "".join(f" {_cell(o.builds.get(a)) if a in o.builds else '-':<24}" for a in ages)
        print(f"{o.name:<34}{cells} {o.candidates:>5} {o.tried:>5} {o.tasks:>5} {o.mine_builds:>6}")
    print()
    for age in ages:
        results = [o.builds[age] for o in outcomes if o.builds.get(age) is not None]
        ready = sum(r.status == ImageStatus.READY for r in results)
        label = "newest commit" if age == 0 else f"{age} years older"
        share = f"{100 * ready / len(results):.0f}%" if results else "-"
        print(f"build success, {label:<17} {ready}/{len(results)} = {share}")
    times = [r.seconds for o in outcomes for r in o.builds.values() if r is not None and not r.cached]
    if times:
        print(f"median build time:              {statistics.median(times):.0f} s ({len(times)} builds)")
    if mined:
        tasks = sum(o.tasks for o in outcomes)
        walked = sum(o.commits_walked for o in outcomes)
        tried = sum(o.tried for o in outcomes)
        builds = sum(o.mine_builds for o in outcomes)
        regraded, verified = sum(o.regraded for o in outcomes), sum(o.verified for o in outcomes)
        print(f"mined tasks:                    {tasks} from {walked} commits walked")
        if walked:
            print(f"tasks per 100 commits:          {100 * tasks / walked:.1f}")
        if tried:
            print(f"tasks per candidate tried:      {tasks / tried:.2f} ({tried} tried)")
        if tasks:
            layers = sum(o.layers for o in outcomes)
            print(f"builds per mined task:          {builds / tasks:.2f} ({builds} builds, {layers} layers)")
        if regraded:
            print(f"verified on re-grade:           {verified}/{regraded} = {100 * verified / regraded:.0f}%")
        reasons: dict[str, int] = {}
        for o in outcomes:
            for reason, count in o.skipped.items():
                reasons[reason] = reasons.get(reason, 0) + count
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:8]:
            print(f"  skipped {count:>4}: {reason}")
    print(f"wall time:                      {wall / 60:.0f} min")
    for o in outcomes:
        for age, r in o.builds.items():
            if r is not None and r.status != ImageStatus.READY:
                print(f"  {o.name} ({'newest' if age == 0 else f'-{age}y'}): {r.failure_class}: {r.reason}")
        if o.error:
            print(f"  {o.name}: {o.error}")
    sys.stdout.flush()


def _cell(result: BuildResult | None) -> str:
    if result is None:
        return "(too young)"
    if result.status == ImageStatus.READY:
        return f"ready {result.seconds:.0f}s"
    return f"{result.failure_class} {result.seconds:.0f}s"[:24]


def _print(event) -> None:
    if event.stage in ("ready", "failed", "mined", "skipped"):
        print(f"[{time.strftime('%H:%M:%S')}] {event.subject}: {event.stage} {event.message}", flush=True)


if __name__ == "__main__":
    main()
