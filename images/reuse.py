"""Where mining gets each commit's image: its own, a layer over another commit's, or a full build.

Building an image per parent commit costs minutes; :mod:`images.layers` makes one commit's image from
another's whose install is planned alike in seconds. :class:`Environments` decides, commit by commit,
which one a source's mining run uses, and remembers failed builds so that the commits planned like
them are not built only to fail the same way.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import git

from images.builder import BuildResult, ImageBuilder
from images.layers import Environment, LayerError, commit_tree, layer, plan_environment
from images.sources import SourceSpec, parse_source
from storage import Image, ImageStatus

#: How far apart in time a layer's commit and its base's may be: the base's packages (pytest and its
#: plugins above all) should be ones the commit's authors could have had.
MAX_DISTANCE = timedelta(days=365)
#: Failures of the install itself: every commit planned alike would fail them too.
INSTALL_FAILURES = frozenset({"install_failed", "native_build_failed", "unsupported_python", "not_python"})
#: Failures of one commit's tests (a broken commit, a refactoring half done): only when
#: :data:`SUITE_FAILURES_ALIKE` builds of a plan failed them do they stand for the commits planned alike.
SUITE_FAILURES = frozenset({"no_tests", "collection_error", "test_runner_broken", "tests_failing"})
SUITE_FAILURES_ALIKE = 2


class Environments:
    """The images of one source's commits for a mining run: the commit's own ready full build when there
    is one; else a layer over a ready full build with the same :attr:`~images.layers.Environment.key`
    whose commit is at most :data:`MAX_DISTANCE` away; else a full build, which becomes the base of its
    key (mining walks history newest first, so the newest build is the nearest).

    Ready images come from the store (earlier runs, the newest of a commit or a key first) and from the
    builds made here.
    """

    def __init__(
        self, builder: ImageBuilder, spec: SourceSpec, repo: git.Repo, *, reuse: bool = True
    ) -> None:
        self.builder, self.spec, self.repo, self.reuse = builder, spec, repo, reuse
        self._environments: dict[str, Environment | None] = {}
        self._bases: dict[str, Image] | None = None
        self._own: dict[str, Image] = {}
        self._failed: dict[str, list[BuildResult]] = {}

    def image_for(self, commit: str) -> tuple[BuildResult, bool]:
        """The image of ``commit`` and whether it is a layer; the result's status says whether it is
        ready. A layer that cannot be made falls back to a full build."""
        if not self.reuse:
            return self.builder.build(parse_source(f"{self.spec.location}@{commit}")), False
        bases = self._known_bases()
        if (own := self._own.get(commit)) is not None and (cached := self.builder.cached(own.tag)):
            return replace(cached, cached=True), False
        environment = self.environment(commit)
        base = bases.get(environment.key) if environment else None
        if environment and base is not None and self._near(base, commit):
            try:
                return layer(self.builder, base, self.repo, self.spec, commit, environment), True
            except LayerError:
                pass  # the full build below says what is wrong, if anything
        built = self.builder.build(parse_source(f"{self.spec.location}@{commit}"))
        record = self.builder.store.get_image(built.tag) if built.tag else None
        if environment and record is not None and record.status == ImageStatus.READY:
            bases[environment.key] = record
        elif environment and base is None:
            self._failed.setdefault(environment.key, []).append(built)
        return built, False

    def failed_alike(self, commit: str) -> BuildResult | None:
        """A failed full build, made here, of another commit whose install is planned as ``commit``'s,
        when no image of that plan is ready and building ``commit`` would most likely fail the same way:
        the install failed (:data:`INSTALL_FAILURES`), or :data:`SUITE_FAILURES_ALIKE` builds failed
        their tests. Failures of the machine (timeouts, the engine) stand for nothing."""
        environment = self.environment(commit) if self.reuse else None
        if environment is None or environment.key in self._known_bases():
            return None
        failed = self._failed.get(environment.key, [])
        installs = [build for build in failed if build.failure_class in INSTALL_FAILURES]
        suites = [build for build in failed if build.failure_class in SUITE_FAILURES]
        if installs:
            return installs[-1]
        return suites[-1] if len(suites) >= SUITE_FAILURES_ALIKE else None

    def environment(self, commit: str) -> Environment | None:
        """:func:`~images.layers.plan_environment` of ``commit``; None when this clone lacks it, its files
        cannot be written, or it cannot be built."""
        if commit not in self._environments:
            scratch = self.builder.home / "tmp"
            try:
                scratch.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=scratch, prefix="tree-") as tmp:
                    tree = commit_tree(self.repo, commit, Path(tmp) / "tree")
                    when = self.repo.commit(commit).committed_datetime
                    found = plan_environment(tree, self.spec, commit, when, self.builder.options)
            except (subprocess.CalledProcessError, OSError, ValueError, git.GitCommandError):
                found = None
            self._environments[commit] = found
        return self._environments[commit]

    def _near(self, base: Image, commit: str) -> bool:
        """Whether ``base``'s commit is another commit at most :data:`MAX_DISTANCE` from ``commit``."""
        if base.repository.commit == commit:
            return False
        try:
            moments = [self.repo.commit(c).committed_datetime for c in (base.repository.commit, commit)]
        except (ValueError, git.GitCommandError):
            return False
        return abs(moments[0] - moments[1]) <= MAX_DISTANCE

    def _known_bases(self) -> dict[str, Image]:
        if self._bases is None:
            self._bases = {}
            # Newest first: an image the builder made since (a fix to its plan) beats an older one.
            for image in reversed(self.builder.store.list_images(ImageStatus.READY, name=self.spec.name)):
                commit = image.repository.commit
                if not commit or "-layer-" in image.tag or not self._ours(image.repository.source):
                    continue
                self._own.setdefault(commit, image)
                if (environment := self.environment(commit)) is not None:
                    self._bases.setdefault(environment.key, image)
        return self._bases

    def _ours(self, source: str) -> bool:
        """Whether an image's source is this one (mining builds ``LOCATION@COMMIT``)."""
        return source in (self.spec.text, self.spec.location) or source.startswith(f"{self.spec.location}@")
