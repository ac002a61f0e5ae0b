"""Issue-fix tasks mined from a repository's history, R2E-Gym style: past fixes that came with tests.

:mod:`envs.candidates` finds the candidates (pure git); :func:`mine` turns them into verified tasks:
it gets an image of each candidate's start commit (a build, or a layer over an image whose install
fits: :mod:`images.layers`), runs the touched test modules with the test patch alone and again (twice)
with the gold patch, keeps the tests that flip to passing (FAIL_TO_PASS) and those that pass
throughout (PASS_TO_PASS), then grades the task with the real grader in fresh environments before
storing it.

A mined task starts at the start commit **with the new tests withheld**: they come with the test patch
at grading time, as in SWE-bench, so the agent sees the problem statement but not the regression test.

Why validation and the grader once disagreed on genuine fixes: validation ran whole test files, in
file order, in one environment; the grader runs only the chosen test ids, FAIL_TO_PASS first, in a
fresh one. A test whose id is not the same from one run to the next (a parameter made from the clock,
``parametrize("ts", [0, time.time()])``) was counted as fixed (absent before, passing after) and then
never found by the grader; a test that passes only after another one ran (a registry the other fills)
passed in the file and failed alone. Both left the gold patch "unresolved" and the candidate was
thrown away. Now the gold state runs twice and only tests passing under the same id both times count,
and when the grader still disagrees, the tests its own runs contradict are dropped (``meta["dropped"]``)
and the task is graded once more.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import git

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from envs.backend import Backend
from envs.candidates import Candidate, candidate_commits
from envs.fix_validation import OUT_OF_TIME, validate
from envs.grading import Grade
from envs.tasks import Verification, verify
from images.baseline import Baseline
from images.builder import BuildResult, ImageBuilder
from images.reuse import Environments
from images.sources import SourceError, SourceSpec, fetch
from storage import ImageStatus, Store, Task, TaskKind, TaskStatus

#: Build failures that say nothing about the commit (the engine, the network): tried again next time.
_TRANSIENT_BUILD_FAILURES = ("docker_error", "clone_failed")


class MineError(ForagerError):
    """A source that has no history to mine."""


@dataclass(frozen=True)
class Skipped:
    """A candidate that did not become a task, and why."""

    sha: str
    reason: str
    lasting: bool = True
    """Whether the next run skips it too: false for failures of the engine or the network."""

    @property
    def why(self) -> str:
        """The reason without its particulars (what follows its first colon): for counting skips."""
        return self.reason.split(": ", 1)[0]


@dataclass(frozen=True)
class MineReport:
    """The outcome of mining one source."""

    source: str
    tasks: list[Task]
    """Every task of the walked history that is stored now: validated by this run or by an earlier one."""
    candidates: int
    """Candidates found in the walked history."""
    tried: int
    """Candidates this run validated (those already stored cost nothing and do not count)."""
    skipped: list[Skipped]
    builds: list[BuildResult]
    """The full image builds this run asked for, cached ones included (``BuildResult.cached``)."""
    layers: list[BuildResult] = field(default_factory=list)
    """The images this run made as layers over another commit's (see :mod:`images.layers`)."""
    rejected_before: int = 0
    """Candidates an earlier run rejected for good, not tried again (see ``retry_rejected``)."""
    made: list[str] = field(default_factory=list)
    """Instance ids of the tasks this run validated and stored."""

    @property
    def built(self) -> int:
        """Images this run really built, an install each (cached ones and layers cost no install)."""
        return sum(1 for build in self.builds if not build.cached)

    @property
    def layered(self) -> int:
        """Layers this run really made (see :attr:`layers`)."""
        return sum(1 for layer in self.layers if not layer.cached)

    @property
    def builds_per_task(self) -> float | None:
        """Images built per task this run made; None when it made none."""
        return self.built / len(self.made) if self.made else None


def mine(
    builder: ImageBuilder,
    backend: Backend,
    store: Store,
    spec: SourceSpec,
    *,
    max_tasks: int,
    max_commits: int = 200,
    since: str | None = None,
    until: str | None = None,
    retry_rejected: bool = False,
    reuse_environments: bool = True,
    test_timeout: float = 600,
    progress: Progress = no_progress,
) -> MineReport:
    """Mine up to ``max_tasks`` verified issue-fix tasks from the history of ``spec``; see the module doc.

    ``spec`` is a git URL or a local git repository; its ref (default: HEAD) is where the walk of
    ``max_commits`` commits starts (``since`` and ``until``, dates or refs, narrow it: see
    :func:`envs.candidates.candidate_commits`). ``store`` must be the builder's store: tasks point at its
    images; environments run on ``backend``. For each candidate, newest first:

    1. the instance id ``NAME.SHA12`` already stored: the task counts, nothing is done (a run resumes);
       a candidate an earlier run rejected is not tried again unless ``retry_rejected``;
    2. the image of ``SOURCE@PARENT``: one already ready, else (``reuse_environments``) a layer over a
       ready image, at most a year apart, of a commit whose install is planned the same way
       (:mod:`images.layers`: a checkout and the install steps again over that environment), else a
       build (:class:`images.reuse.Environments`); a failed build skips, and so do, for this run, the
       commits planned like it once their install failed or two builds failed their tests;
    3. in one environment: the test patch is applied and the touched test files are run with the image's
       runner, as files for pytest (data files by the tests that name them: :mod:`envs.runner_targets`) and by
       module label for unittest or a project's unittest script (every test of a module is reported, the new
       ones included, in one run), then the gold patch is applied and they run twice more. FAIL_TO_PASS: the
       tests that pass in both runs after and did not (failed, error, missing) before. PASS_TO_PASS: those
       that passed all three times. Tests the image's baseline calls flaky count in neither. When no test of
       the touched modules passed before the fix (they hold only new tests, or cannot be imported without it),
       PASS_TO_PASS comes from up to :data:`envs.fix_validation.MAX_NEIGHBOURS` stable passing baseline tests
       of other test files in the same directories (or the folders run for data files), run in every state
       too; when still none, PASS_TO_PASS is empty, and ``meta["pass_to_pass_from"]`` says which of
       ``test_files``, ``neighbours`` and ``none`` it is. No FAIL_TO_PASS test skips;
    4. the task is graded with :func:`envs.tasks.verify` in fresh environments: the gold patch must
       resolve it and the unmodified start must be unresolved. When they do not, the tests the grades
       contradict are dropped and the task is graded again, once (see the module doc); still not, the
       candidate is skipped;
    5. the task is stored ``verified`` at once, so an interrupted run keeps what it validated.

    Rejections are remembered in ``HOME/mine/rejected.jsonl``, except those that say nothing about the
    commit (the engine failed, the source could not be fetched).

    Raises:
        MineError: ``spec`` is a PyPI release (an sdist has no history), a folder that is not a git
            repository, or a clone whose history is damaged (shallow, or missing objects).
        SourceError: the source cannot be cloned, or ``since``/``until`` names no commit.
    """
    _check_has_history(spec)
    progress(ProgressEvent(spec.name, "history", f"walking up to {max_commits} commits"))
    with _history(builder.home, spec, max_commits, since, until) as (repo, candidates):
        environments = Environments(builder, spec, repo, reuse=reuse_environments)
        journal = _Journal(builder.home / "mine" / "rejected.jsonl")
        rejected = {} if retry_rejected else journal.read()
        report = MineReport(spec.text, [], len(candidates), 0, [], [])
        tried = rejected_before = 0
        for number, candidate in enumerate(candidates, 1):
            if len(report.tasks) >= max_tasks:
                break
            task_id = instance_id(spec, candidate)
            if (existing := store.get_task(task_id)) is not None:
                report.tasks.append(existing)
                continue
            if task_id in rejected:
                rejected_before += 1
                continue
            tried += 1
            status = f"{len(report.tasks)} tasks, {candidate.sha[:12]}"
            progress(ProgressEvent(spec.name, "validate", status, number, len(candidates)))
            if (failed := environments.failed_alike(candidate.parent)) is not None:
                # Not journaled: it says nothing certain about this commit.
                why = f"not built: {failed.commit}, planned alike, failed to build ({failed.failure_class})"
                report.skipped.append(Skipped(candidate.sha, why, lasting=False))
                continue
            built, layered = environments.image_for(candidate.parent)
            (report.layers if layered else report.builds).append(built)
            outcome = _mine_one(built, backend, store, spec, candidate, test_timeout)
            if isinstance(outcome, Skipped):
                report.skipped.append(outcome)
                if outcome.lasting:
                    journal.add(task_id, outcome.reason)
                continue
            (stored,) = store.add_tasks([outcome])
            report.tasks.append(stored)
            report.made.append(task_id)
    progress(ProgressEvent(spec.name, "done", f"{len(report.tasks)} tasks from {len(candidates)} candidates"))
    return replace(report, tried=tried, rejected_before=rejected_before)


def instance_id(spec: SourceSpec, candidate: Candidate) -> str:
    """``NAME.SHA12``: the same commit of the same source always gets the same id."""
    return f"{spec.name}.{candidate.sha[:12]}"


def _check_has_history(spec: SourceSpec) -> None:
    if spec.kind == "pypi":
        raise MineError(
            f"{spec.text}: a PyPI sdist has no history to mine; give the project's git URL or a local clone"
        )
    if spec.kind == "local":
        try:
            git.Repo(spec.location).close()
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise MineError(
                f"{spec.text} is not a git repository, so it has no history to mine; give a clone"
            ) from exc


@contextmanager
def _history(
    home: Path, spec: SourceSpec, max_commits: int, since: str | None, until: str | None
) -> Iterator[tuple[git.Repo, list[Candidate]]]:
    """A scratch clone of ``spec`` and its candidates, for as long as the run needs its history."""
    scratch = home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="mine-") as tmp:
        # Only git sources get here, so the package index settings are never used.
        checkout = fetch(spec, Path(tmp) / "src", sdist_cache=home / "cache" / "sdists", index_url="")
        if checkout.history_cut:
            raise MineError(
                f"{spec.text}: {checkout.history_cut}, so it has no history to mine: fetch all of it "
                "(git fetch --unshallow) or clone it again"
            )
        with git.Repo(checkout.path) as repo:
            try:
                found = candidate_commits(
                    repo, max_commits=max_commits, rev=checkout.commit, since=since, until=until
                )
            except git.GitCommandError as exc:
                raise SourceError(
                    f"{spec.text}: the history between {since or 'the start'} and {until or 'the ref'} "
                    f"cannot be walked; give dates (YYYY-MM-DD) or commits, tags or branches it has"
                ) from exc
            yield repo, found


def _mine_one(
    built: BuildResult,
    backend: Backend,
    store: Store,
    spec: SourceSpec,
    candidate: Candidate,
    test_timeout: float,
) -> Task | Skipped:
    """The verified task ``candidate`` makes in the image ``built`` of its parent, or why it makes none."""
    image = store.get_image(built.tag) if built.tag else None
    if built.status != ImageStatus.READY or image is None or not image.test_command:
        reason = f"the image of the parent commit failed to build ({built.failure_class}): {built.reason}"
        return Skipped(candidate.sha, reason, lasting=built.failure_class not in _TRANSIENT_BUILD_FAILURES)
    baseline = Baseline.from_json({"outcomes": image.baseline, "flaky": image.flaky})
    with backend.start(image.tag, episode=f"mine-{candidate.sha[:12]}") as env:
        verdict = validate(env, image.test_command, baseline, candidate, test_timeout)
    if isinstance(verdict, str):
        # A run out of time may be the machine's load, not the commit's: tried again next time.
        return Skipped(candidate.sha, verdict, lasting=OUT_OF_TIME not in verdict)
    task = Task(
        instance_id=instance_id(spec, candidate),
        kind=TaskKind.ISSUE_FIX,
        image_id=image.id,
        status=TaskStatus.VERIFIED,
        setup_patch="",
        gold_patch=candidate.gold_patch,
        test_patch=candidate.test_patch,
        problem_statement=candidate.message,
        fail_to_pass=verdict.fail_to_pass,
        pass_to_pass=verdict.pass_to_pass,
        meta={
            "commit": candidate.sha,
            "parent": candidate.parent,
            "commits": list(candidate.commits),
            "shape": candidate.shape,
            "source": spec.location,
            "title": candidate.title,
            "pass_to_pass_from": verdict.pass_to_pass_from,
        },
    )
    verification = verify(backend, task, image, timeout=test_timeout)
    graded = 2 * (len(task.fail_to_pass) + len(task.pass_to_pass))
    if not verification.ok and (agreed := _agreed(task, verification)) is not None:
        dropped = sorted({*task.fail_to_pass, *task.pass_to_pass} - {*agreed[0], *agreed[1]})
        task.fail_to_pass, task.pass_to_pass = agreed
        task.meta = {**task.meta, "dropped": dropped}
        verification = verify(backend, task, image, timeout=test_timeout)
        graded += 2 * (len(task.fail_to_pass) + len(task.pass_to_pass))
    if not verification.ok:
        statuses = (verification.gold.status, verification.start.status)
        return Skipped(
            candidate.sha,
            f"the real grader disagrees: gold patch {statuses[0]}, unmodified start {statuses[1]}",
            # A grade that failed for the machine (timeout, dead environment) is worth trying again.
            lasting="error" not in statuses,
        )
    # The validation runs, then the grades (each runs every FAIL_TO_PASS and PASS_TO_PASS test).
    task.meta = {**task.meta, "test_executions": verdict.executions + graded}
    return task


def _agreed(task: Task, verification: Verification) -> tuple[list[str], list[str]] | None:
    """FAIL_TO_PASS and PASS_TO_PASS without the tests the grades contradict; None when nothing is left
    to try: a grade failed for the infrastructure, no FAIL_TO_PASS test would remain, or none is dropped.

    A FAIL_TO_PASS test stays when it passed with the gold patch and not at the start; a PASS_TO_PASS
    test when it passed in both.
    """
    gold, start = verification.gold, verification.start
    if _unusable(gold) or _unusable(start):
        return None
    fail_to_pass = [
        test
        for test in task.fail_to_pass
        if gold.fail_to_pass.get(test) == "passed" and start.fail_to_pass.get(test) != "passed"
    ]
    pass_to_pass = [
        test
        for test in task.pass_to_pass
        if gold.pass_to_pass.get(test) == "passed" and start.pass_to_pass.get(test) == "passed"
    ]
    if not fail_to_pass or (fail_to_pass, pass_to_pass) == (task.fail_to_pass, task.pass_to_pass):
        return None
    return fail_to_pass, pass_to_pass


def _unusable(grade: Grade) -> bool:
    """A grade whose tests did not run: nothing can be learnt from its outcomes."""
    return grade.status == "error" or not (grade.fail_to_pass or grade.pass_to_pass)


def rejected_candidates(home: Path) -> dict[str, str]:
    """Instance id -> why mining under ``home`` rejected that candidate for good (its journal)."""
    return _Journal(home / "mine" / "rejected.jsonl").read()


class _Journal:
    """Candidates rejected for good, one JSON object a line (``instance_id``, ``reason``): appended to
    as they are rejected, so an interrupted run loses none."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        """Instance id -> why it was rejected; a line that cannot be read (cut by a crash) is ignored."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        rejected = {}
        for line in lines:
            try:
                entry = json.loads(line)
                rejected[str(entry["instance_id"])] = str(entry["reason"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        return rejected

    def add(self, instance_id: str, reason: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"instance_id": instance_id, "reason": reason}) + "\n")
