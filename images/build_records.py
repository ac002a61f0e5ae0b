"""What a finished build leaves behind: its image's record in the store (ready, failed, or a build that
failed before it had an image) and its artefacts on disk (Dockerfile, recipe, baseline)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import docker

from images.baseline import Baseline, Verdict, log_tail
from images.build_log import BuildLog
from images.build_result import BuildFailed, BuildResult
from images.recipe import InstallRecipe
from images.sources import Checkout, SourceSpec
from storage import Image, ImageStatus, Store


def record_build(
    store: Store,
    checkout: Checkout,
    recipe: InstallRecipe,
    tag: str,
    image: docker.models.images.Image,
    unique: int,
    outcome: tuple[Baseline | None, Verdict],
    seconds: float,
    log: BuildLog,
) -> BuildResult:
    """Record ``image``, committed as ``tag`` from ``checkout``, with its baseline and verdict ``outcome``;
    ``unique`` is the bytes it adds to its base image."""
    spec, (baseline, verdict) = checkout.spec, outcome
    size = image.attrs["Size"]
    status = ImageStatus.READY if verdict.ready else ImageStatus.FAILED
    passed, total = (baseline.passed, baseline.total) if baseline else (0, 0)
    repository = store.get_or_create_repository(spec.text, spec.name, checkout.commit)
    store.save_image(
        Image(
            repository_id=repository.id,
            tag=tag,
            docker_id=image.id,
            status=status,
            failure_class=verdict.failure_class,
            base_image=recipe.base_image,
            recipe=recipe.to_json(),
            recipe_hash=recipe.digest(),
            test_command=recipe.test_command,
            baseline=dict(baseline.outcomes) if baseline else {},
            flaky=sorted(baseline.flaky) if baseline else [],
            durations=dict(baseline.durations) if baseline and baseline.durations else None,
            partial=baseline.partial if baseline else False,
            tests_passed=passed,
            tests_total=total,
            size_bytes=size,
            unique_bytes=unique,
            build_seconds=seconds,
            log_path=str(log.path),
            log_tail=None if verdict.ready else log_tail(log.text()),
        )
    )
    log.section(f"{status.value}: {verdict.reason}")
    return BuildResult(
        spec.text, spec.name, status, verdict.failure_class, verdict.reason, tag, checkout.commit,
        passed, total, seconds, size, unique, log.path,
    )  # fmt: skip


def record_failure(
    store: Store,
    spec: SourceSpec,
    checkout: Checkout | None,
    failed: BuildFailed,
    log: BuildLog,
    started: float,
    base_image: str,
) -> BuildResult:
    """Record a build that failed before it had an image (``checkout`` is None when even fetching failed)."""
    seconds = time.monotonic() - started
    commit = checkout.commit if checkout else None
    repository = store.get_or_create_repository(spec.text, spec.name, commit)
    tag = f"failed/{spec.name}:{(commit or 'nocommit')[:12]}"
    store.save_image(
        Image(
            repository_id=repository.id,
            tag=tag,
            status=ImageStatus.FAILED,
            failure_class=failed.failure_class,
            base_image=base_image,
            recipe={},
            recipe_hash="",
            build_seconds=seconds,
            log_path=str(log.path),
            log_tail=log_tail(log.text()),
        )
    )
    return BuildResult(
        spec.text, spec.name, ImageStatus.FAILED, failed.failure_class, failed.reason, None, commit,
        seconds=seconds, log_path=log.path,
    )  # fmt: skip


def write_artifacts(
    home: Path, checkout: Checkout, recipe: InstallRecipe, baseline: Baseline | None, tag: str
) -> None:
    """The image's Dockerfile, recipe and baseline under ``home/images/OWNER__REPO/VERSION``."""
    folder = home / "images" / tag.replace(":", "/").removeprefix("forager/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(recipe.dockerfile(checkout.spec.text, checkout.commit))
    (folder / "recipe.json").write_text(_json(recipe.to_json()))
    if baseline is not None:
        (folder / "baseline.json").write_text(_json(baseline.to_json()))


def _json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
