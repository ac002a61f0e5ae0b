"""Tasks as environments see them: bringing a fresh environment into a task's starting state.

A mutate-fix task starts from the image's commit with the bug applied, in a repository whose history
is replaced by a single commit of that state: the original code lives on in every ancestor, and
``git log -p`` would otherwise hand the agent the fix. An issue-fix task starts at the image's commit
(its history holds only the past; the builder removed the future) with its setup patch, if any.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from core.errors import ForagerError
from envs.backend import Backend
from envs.grading import Grade, TestSpec, git_apply, grade
from envs.runtime import Runtime
from storage import Image, Task

_PATCH_FILE = "/tmp/forager-setup.patch"
# The single commit of a mutate-fix start has a fixed identity and date: the same task, the same commit.
_FRESH_HISTORY = (
    "cp .git/info/exclude /tmp/forager-exclude 2>/dev/null; rm -rf .git && git init -q -b main"
    " && cp /tmp/forager-exclude .git/info/exclude 2>/dev/null; git add -A"
    " && GIT_AUTHOR_DATE=2000-01-01T00:00:00Z GIT_COMMITTER_DATE=2000-01-01T00:00:00Z"
    " git -c user.name=forager -c user.email=forager@localhost commit -q --no-verify -m 'Initial commit'"
)


class TaskSetupError(ForagerError):
    """A task's starting state could not be made in its image (the setup patch does not apply)."""


def prepare(runtime: Runtime, kind: str, setup_patch: str) -> None:
    """Bring ``runtime`` (fresh from the task's image) into the task's starting state."""
    if setup_patch:
        applied = git_apply(runtime, setup_patch, _PATCH_FILE)
        runtime.run(f"rm -f {_PATCH_FILE}")
        if applied.exit_code != 0:
            raise TaskSetupError(
                f"the task's setup patch does not apply to its image: {applied.output[-300:]}"
            )
    if kind == "mutate_fix":
        done = runtime.run(f"(cd {shlex.quote(runtime.workdir)} && {_FRESH_HISTORY})")
        if done.exit_code != 0:
            raise TaskSetupError(f"could not make the task's starting commit: {done.output[-300:]}")


@dataclass(frozen=True)
class Verification:
    """A task graded twice in fresh environments: with its gold patch and as it starts."""

    gold: Grade
    start: Grade

    @property
    def ok(self) -> bool:
        """The gold patch resolves the task and the untouched start does not."""
        return self.gold.resolved and self.start.status == "unresolved"


def verify(backend: Backend, task: Task, image: Image, *, timeout: float = 900) -> Verification:
    """Grade ``task``'s gold patch and its unmodified start, each in a fresh environment of ``image``."""
    episode = f"verify-{task.instance_id}"
    gold = grade_task(backend, task, image, task.gold_patch, timeout=timeout, episode=episode)
    start = grade_task(backend, task, image, "", timeout=timeout, episode=episode)
    return Verification(gold, start)


def grade_task(
    backend: Backend, task: Task, image: Image, patch: str, *, timeout: float, episode: str
) -> Grade:
    """Grade ``patch`` as a submission for ``task``, in a fresh environment of ``image`` in its starting
    state: nothing an episode did to its own environment can sway the grade."""
    spec = TestSpec(
        test_command=image.test_command or "",
        fail_to_pass=tuple(task.fail_to_pass),
        pass_to_pass=tuple(task.pass_to_pass),
        test_patch=task.test_patch,
    )
    # The grading run is bounded by ``timeout``: the environment need not outlive it (plus a margin).
    with backend.start(image.tag, episode=episode, lifetime=timeout) as env:
        prepare(env, task.kind, task.setup_patch)
        return grade(env, patch, spec, timeout=timeout)
