"""Importing SWE-bench instances as tasks: an image at each ``base_commit``, then verified.

An instance is an issue-fix task, or a mutate-fix task when it carries Forager's ``setup_patch`` (as
``forager tasks export`` writes them). It becomes a task only once its gold patch turns FAIL_TO_PASS
green while PASS_TO_PASS stays green, and its unmodified start does not: a task stored ``verified``
has been graded both ways here. One that fails verification is stored ``invalid``, with the grades,
so the failure can be looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from envs.backend import Backend
from envs.swebench import Instance
from envs.tasks import TaskSetupError, verify
from images.builder import ImageBuilder
from images.sources import SourceError, parse_source
from storage import Store, Task, TaskKind, TaskStatus

#: Where an instance's ``repo`` (``owner/name``) is cloned from; ``{repo}`` is replaced.
DEFAULT_SOURCE = "https://github.com/{repo}"


@dataclass(frozen=True)
class ImportResult:
    """What became of one instance."""

    instance_id: str
    status: str
    """``verified``, ``invalid`` (stored, did not verify), ``skipped`` (already stored), ``no_image``, or
    ``error`` (grading failed for want of time or a working environment: not stored, a rerun tries again)."""
    reason: str


def import_instances(
    builder: ImageBuilder,
    store: Store,
    backend: Backend,
    instances: list[Instance],
    *,
    source: str | None = None,
    progress: Progress = no_progress,
) -> list[ImportResult]:
    """Build (or reuse) each instance's image, verify it, store it; one result per instance, in order.

    The image is built from ``source`` (``{repo}`` replaced) at ``base_commit`` when it is given; else
    from the instance's ``image_source`` when it has one; else from :data:`DEFAULT_SOURCE`.
    """
    results = []
    for instance in instances:
        progress(ProgressEvent(instance.instance_id, "import", instance.repo))
        results.append(_import(builder, store, backend, instance, source))
    return results


def _import(
    builder: ImageBuilder, store: Store, backend: Backend, instance: Instance, source: str | None
) -> ImportResult:
    if store.get_task(instance.instance_id) is not None:
        return ImportResult(instance.instance_id, "skipped", "already in the store")
    if source is None and instance.image_source:
        text = instance.image_source
    else:
        text = f"{(source or DEFAULT_SOURCE).format(repo=instance.repo)}@{instance.base_commit}"
    try:
        spec = parse_source(text)
    except SourceError as exc:
        return ImportResult(instance.instance_id, "no_image", str(exc))
    built = builder.build(spec)
    image = store.get_image(built.tag) if built.tag else None
    if image is None or image.docker_id is None:
        return ImportResult(instance.instance_id, "no_image", f"{built.failure_class}: {built.reason}")
    if not (built.commit or "").startswith(instance.base_commit):
        # An sdist's commit is made from its content: another release of the same version differs.
        reason = f"{text} is at commit {built.commit}, not at base_commit {instance.base_commit}"
        return ImportResult(instance.instance_id, "no_image", reason)
    task = Task(
        instance_id=instance.instance_id,
        kind=TaskKind.MUTATE_FIX if instance.setup_patch else TaskKind.ISSUE_FIX,
        image_id=image.id,
        status=TaskStatus.UNVERIFIED,
        setup_patch=instance.setup_patch,
        gold_patch=instance.patch,
        test_patch=instance.test_patch,
        problem_statement=instance.problem_statement,
        fail_to_pass=list(instance.FAIL_TO_PASS),
        pass_to_pass=list(instance.PASS_TO_PASS),
        meta={
            "repo": instance.repo,
            "base_commit": instance.base_commit,
            "hints_text": instance.hints_text,
            "created_at": instance.created_at,
            "version": instance.version,
            "environment_setup_commit": instance.environment_setup_commit,
        },
    )
    try:
        verification = verify(backend, task, image)
    except TaskSetupError as exc:  # the instance's own setup patch: it will never apply
        task.status = TaskStatus.INVALID
        task.meta = {**task.meta, "verification": {"error": str(exc)}}
        store.add_tasks([task])
        return ImportResult(instance.instance_id, task.status.value, str(exc))
    except ForagerError as exc:  # the environment, not the instance: nothing stored, a rerun tries again
        return ImportResult(instance.instance_id, "error", str(exc))
    grades = (verification.gold, verification.start)
    # Out of time or memory, a dead environment: the machine's state, not the instance's (a test patch
    # that does not apply, "test_setup", is the instance's and makes it invalid).
    if failed := [g.infra_error for g in grades if g.infra_error and g.infra_error != "test_setup"]:
        return ImportResult(
            instance.instance_id, "error", f"grading failed ({', '.join(failed)}); not stored"
        )
    task.status = TaskStatus.VERIFIED if verification.ok else TaskStatus.INVALID
    task.meta = {
        **task.meta,
        "verification": {"gold": verification.gold.to_json(), "start": verification.start.to_json()},
    }
    store.add_tasks([task])
    reason = (
        "gold resolves, start does not"
        if verification.ok
        else (f"gold {verification.gold.status}, start {verification.start.status}")
    )
    return ImportResult(instance.instance_id, task.status.value, reason)
