"""Thin images: one commit's image made from a ready image of another commit of the same source.

Building an image installs the project (~30 s and more per commit). Commits whose dependency
declarations and native sources are the same (:func:`dependency_digest`) install the same way, so
mining reuses one install across them, as SWE-bench keeps one environment per version: a **layer** is
the ready base image with the other commit checked out in its repository and its history sanitized
again (only that commit and its ancestors remain), committed as an image of its own. The editable
install keeps pointing at the checkout, and no native source differs, so nothing is reinstalled.

A layer keeps its base's recipe and test command; its baseline is the base's (it is not run again):
tests of the other commit may differ, which mining tolerates — validation and grading run the tests
themselves — but other consumers of baselines should build the commit instead. Its log tail says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
import re
import shlex
import tarfile
import tempfile
import time
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path

import git
from docker.errors import DockerException

from core.errors import ForagerError
from images.builder import BuildResult, ImageBuilder
from images.engine import CLEAR_OWNER, build_container_name, owner_labels
from images.recipe import REPO_DIR
from images.sources import SourceSpec, parse_source
from storage import Image, ImageStatus

#: How a layer's image record begins its log tail: what tells a layer from a full build in the store.
LAYER_NOTE = "a layer over "

#: Files an install plan reads, by name anywhere in the tree: metadata, lock files, requirement and
#: constraint files, tool configurations that name test dependencies, interpreter pins.
DEPENDENCY_FILES = (
    "pyproject.toml", "setup.py", "setup.cfg", "requirements*.txt", "requirements*.in", "constraints*.txt",
    "uv.lock", "poetry.lock", "pdm.lock", "Pipfile", "Pipfile.lock", "pylock*.toml", "tox.ini",
    "noxfile.py", "environment.yml", ".python-version", "MANIFEST.in", "Makefile",
)  # fmt: skip
#: Directories whose files count as dependency declarations: requirement folders and CI workflows,
#: whose set-up steps the builder replays.
DEPENDENCY_DIRS = ("requirements", ".github/workflows")
#: Sources an install compiles: a change to one needs a new build, not a checkout.
NATIVE_SUFFIXES = (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".pyx", ".pxd", ".pxi", ".rs", ".f", ".f90")
_BUNDLE = "/tmp/forager-layer.bundle"
_REF = "refs/forager/layer"


class LayerError(ForagerError):
    """A layer could not be made (the engine failed, or the commit could not be checked out)."""


def dependency_digest(repo: git.Repo, commit: str) -> str:
    """A digest of what installing ``commit`` depends on: the path and content id of every dependency
    declaration (:data:`DEPENDENCY_FILES`, :data:`DEPENDENCY_DIRS`) and native source."""
    listing = repo.git.ls_tree("-r", "-z", "--full-tree", commit, strip_newline_in_stdout=False)
    digest = hashlib.sha256()
    for entry in sorted(listing.split("\0")):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        if _installs_from(path):
            digest.update(f"{path}\0{meta.split()[2]}\n".encode())
    return digest.hexdigest()


def _installs_from(path: str) -> bool:
    name = posixpath.basename(path)
    return (
        any(fnmatch(name, pattern) for pattern in DEPENDENCY_FILES)
        or any(path.startswith(directory + "/") for directory in DEPENDENCY_DIRS)
        or name.endswith(NATIVE_SUFFIXES)
    )


def layer(builder: ImageBuilder, base: Image, repo: git.Repo, spec: SourceSpec, commit: str) -> BuildResult:
    """The image of ``commit`` made from ``base`` (a ready image of another commit of ``spec``, whose
    repository ``repo`` holds both commits); recorded in the builder's store like a build.

    Raises:
        LayerError: the engine failed or git could not check the commit out in the image.
    """
    started = time.monotonic()
    source = f"{spec.location}@{commit}"  # as a build of the commit would record it
    base_commit = base.repository.commit
    tag = f"{base.tag.split(':')[0]}:{commit[:12]}-layer-{base.tag.split(':')[1][:21]}"
    if (cached := builder.cached(tag)) is not None:
        return replace(cached, cached=True)
    name = build_container_name(f"{spec.name}-layer")
    try:
        container = builder.client.containers.run(
            base.tag, ["sleep", "infinity"], name=name, detach=True, labels=owner_labels(),
            network_mode="none",
        )  # fmt: skip
    except DockerException as exc:
        raise LayerError(f"could not start a container of {base.tag}: {exc}") from exc
    try:
        if base_commit and not repo.is_ancestor(commit, base_commit):
            container.put_archive("/tmp", _bundle(repo, base_commit, commit))
        exit_code, output = container.exec_run(["sh", "-c", _checkout_script(commit)], workdir=REPO_DIR)
        if exit_code != 0:
            raise LayerError(f"could not check {commit[:12]} out in {base.tag}: {output.decode()[-500:]}")
        labels = {
            "forager.source": source,
            "forager.commit": commit,
            "forager.layer-of": base.tag,
        }
        repository, version = tag.split(":")
        image = container.commit(
            repository=repository,
            tag=version,
            conf={"Labels": labels, "WorkingDir": REPO_DIR},
            changes=['CMD ["bash"]', CLEAR_OWNER],
        )
    except DockerException as exc:
        raise LayerError(f"could not make a layer of {base.tag} for {commit[:12]}: {exc}") from exc
    finally:
        with contextlib.suppress(DockerException):  # a gc of build containers removes what is left
            container.remove(force=True)
    seconds = time.monotonic() - started
    note = (
        f"{LAYER_NOTE}{base.tag}: {commit} checked out in it, its dependency declarations unchanged; "
        "the baseline is the base's, not run again"
    )
    stored = builder.store.save_image(
        Image(
            repository_id=builder.store.get_or_create_repository(source, spec.name, commit).id,
            tag=tag,
            docker_id=image.id,
            status=ImageStatus.READY,
            base_image=base.base_image,
            recipe=base.recipe,
            recipe_hash=base.recipe_hash,
            test_command=base.test_command,
            baseline=dict(base.baseline),
            flaky=list(base.flaky),
            tests_passed=base.tests_passed,
            tests_total=base.tests_total,
            durations=base.durations,
            partial=base.partial,
            size_bytes=image.attrs.get("Size"),
            build_seconds=seconds,
            log_tail=note,
        )
    )
    return BuildResult(
        source, spec.name, ImageStatus.READY, None, note, stored.tag, commit, stored.tests_passed,
        stored.tests_total, seconds, stored.size_bytes,
    )  # fmt: skip


def _checkout_script(commit: str) -> str:
    """Check ``commit`` out (from the bundle when there is one), then keep only it and its ancestors, as
    the builder's sanitizing does: no later commit, so no fix, is left in the history."""
    sha = shlex.quote(commit)
    return f"""set -e
if [ -f {_BUNDLE} ]; then git fetch -q {_BUNDLE} "+{_REF}:{_REF}"; fi
git checkout -q --force --detach {sha}
git for-each-ref --format='%(refname)' | while read -r ref; do git update-ref -d "$ref"; done
git checkout -q -B main
git reflog expire --expire=now --all
git gc -q --prune=now
rm -f {_BUNDLE}"""


def _bundle(repo: git.Repo, base_commit: str, commit: str) -> bytes:
    """A tar holding a git bundle of the commits from ``base_commit`` (which the image has) to ``commit``."""
    repo.git.update_ref(_REF, commit)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.bundle"
            repo.git.bundle("create", str(path), _REF, f"^{base_commit}")
            data = path.read_bytes()
    finally:
        repo.git.update_ref("-d", _REF)
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        info = tarfile.TarInfo(posixpath.basename(_BUNDLE))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return stream.getvalue()


class Environments:
    """Where mining gets each commit's image for one source: an image of that commit already ready,
    else a layer over a ready image with the same :func:`dependency_digest`, else a full build.

    Ready images come from the store (earlier runs) and from the builds made here; the first ready
    full build of a digest is the base of every layer of that digest.
    """

    def __init__(
        self, builder: ImageBuilder, spec: SourceSpec, repo: git.Repo, *, reuse: bool = True
    ) -> None:
        self.builder, self.spec, self.repo, self.reuse = builder, spec, repo, reuse
        self._digests: dict[str, str | None] = {}
        self._bases: dict[str, Image] | None = None

    def image_for(self, commit: str) -> tuple[BuildResult, bool]:
        """The image of ``commit`` and whether it is a layer (no install ran); the result's status says
        whether it is ready. A layer that cannot be made falls back to a full build."""
        if not self.reuse:
            return self.builder.build(parse_source(f"{self.spec.location}@{commit}")), False
        bases = self._known_bases()
        digest = self._digest(commit)
        base = bases.get(digest) if digest else None
        if base is not None and base.repository.commit != commit:
            try:
                return layer(self.builder, base, self.repo, self.spec, commit), True
            except LayerError:
                # The full build below says what is wrong, if anything, and becomes the base.
                del bases[digest]
        built = self.builder.build(parse_source(f"{self.spec.location}@{commit}"))
        record = self.builder.store.get_image(built.tag) if built.tag else None
        if digest and record is not None and record.status == ImageStatus.READY:
            bases.setdefault(digest, record)
        return built, False

    def _known_bases(self) -> dict[str, Image]:
        if self._bases is None:
            self._bases = {}
            for image in self.builder.store.list_images(ImageStatus.READY, name=self.spec.name):
                commit = image.repository.commit
                if not commit or "-layer-" in image.tag or not self._ours(image.repository.source):
                    continue
                if not installs_editable(image):
                    # Its environment holds a copy of its own commit's code: another commit checked
                    # out over it would be tested against that copy.
                    continue
                if (digest := self._digest(commit)) is not None:
                    self._bases.setdefault(digest, image)
        return self._bases

    def _ours(self, source: str) -> bool:
        """Whether an image's source is this one (mining builds ``LOCATION@COMMIT``)."""
        return source in (self.spec.text, self.spec.location) or source.startswith(f"{self.spec.location}@")

    def _digest(self, commit: str) -> str | None:
        """The commit's dependency digest; None when this clone does not have the commit."""
        if commit not in self._digests:
            try:
                self._digests[commit] = dependency_digest(self.repo, commit)
            except git.GitCommandError:
                self._digests[commit] = None
        return self._digests[commit]


def installs_editable(image: Image) -> bool:
    """Whether the image installed the project editable (its tests import the checkout in /repo)."""
    steps = (image.recipe or {}).get("steps") or []
    return any(re.search(r"(?:^|\s)(?:-e|--editable)(?:\s|=|$)", step.get("run", "")) for step in steps)
