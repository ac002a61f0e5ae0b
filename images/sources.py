"""What a repository image is built from: a git URL, a local path or a PyPI sdist, resolved to a commit.

Every source ends up as a git working tree at one commit, because tasks, grading and the agent's
``submit`` all work in terms of git. Plain directories and sdists get a fresh repository with one
commit made with a fixed author and date, so the same content always gives the same commit.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import git
from packaging.version import InvalidVersion, Version

from core.errors import ForagerError
from images.pypi import PackageIndexError, cached_sdist, download, find_sdist

_GIT_URL = re.compile(r"^(https?|git|ssh|file)://|^[\w.-]+@[\w.-]+:")
_FIXED_IDENTITY = {
    "GIT_AUTHOR_NAME": "forager",
    "GIT_AUTHOR_EMAIL": "forager@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "forager",
    "GIT_COMMITTER_EMAIL": "forager@localhost",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}
#: Build and test artefacts that installing or testing the project creates: never part of a diff.
BUILD_ARTEFACTS = ("*.egg-info/", "__pycache__/", "*.py[cod]", "build/", "dist/", ".pytest_cache/", ".eggs/")
#: Left out when a plain directory is copied: environments and caches, never the project's source.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", ".tox", ".nox", "__pycache__", ".pytest_cache")


class SourceError(ForagerError):
    """The source cannot be fetched or resolved (failure class ``clone_failed``)."""


@dataclass(frozen=True)
class SourceSpec:
    """A source as the user named it, parsed."""

    kind: Literal["git", "local", "pypi"]
    location: str
    """Clone URL, absolute path, or distribution name."""
    ref: str | None
    """Commit, tag or branch (git, local); version (pypi); None for the default."""
    text: str

    @property
    def name(self) -> str:
        """``owner__repo`` for a URL, ``pypi__name`` for a package, the folder name for a path."""
        if self.kind == "pypi":
            return f"pypi__{self.location}"
        parts = [p for p in re.split(r"[/:]", self.location.removesuffix(".git")) if p]
        return "__".join(parts[-2:]) if self.kind == "git" else parts[-1]


@dataclass(frozen=True)
class Checkout:
    """A source fetched into a local git working tree at ``commit``."""

    spec: SourceSpec
    path: Path
    commit: str
    version: str | None = None
    """The release version, for sdists (tools like setuptools_scm cannot read it from our git history)."""
    committed_at: datetime | None = None
    """When ``commit`` was made, for a git source; None for folders and sdists, whose one commit Forager
    made itself with a fixed date."""
    history_cut: str | None = None
    """Why the checkout's history is only ``commit``'s tree, when it is: the source was a shallow clone or
    missed objects of its history (see :func:`fetch`). Its one commit keeps ``commit``'s author, dates
    and message, under another id; ``commit`` stays the source's."""


def parse_source(text: str) -> SourceSpec:
    """Parse ``URL[@REF]``, ``PATH[@REF]`` or ``pypi:NAME[==VERSION]``."""
    text = text.strip()
    if text.startswith("pypi:"):
        name, _, version = text.removeprefix("pypi:").partition("==")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or (version and not _is_version(version)):
            raise SourceError(f"{text!r}: expected pypi:NAME or pypi:NAME==VERSION")
        return SourceSpec("pypi", name.lower(), version or None, text)
    if _GIT_URL.match(text):
        location, ref = _split_ref(text, after=text.find("://") + 3 if "://" in text else text.find("@") + 1)
        return SourceSpec("git", location, ref, text)
    location, ref = _split_ref(text, after=0)
    if not Path(location).exists() and Path(text).exists():
        location, ref = text, None  # an '@' that is part of the folder's name
    path = Path(location).expanduser()
    if not path.is_dir():
        raise SourceError(f"{text!r} is neither a git URL, pypi:NAME, nor an existing directory")
    return SourceSpec("local", str(path.resolve()), ref, text)


def read_source_file(path: Path) -> list[SourceSpec]:
    """Sources from a file: one per line (``#`` comments) or SWE-bench JSONL (``repo``, ``base_commit``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SourceError(f"cannot read the source list {path}: {reason}") from exc
    specs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
                line = f"https://github.com/{record['repo']}@{record['base_commit']}"
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SourceError(
                    f"{path}:{number}: not a JSON object with 'repo' and 'base_commit'"
                ) from exc
        specs.append(parse_source(line))
    return specs


def fetch(
    spec: SourceSpec, dest: Path, *, sdist_cache: Path, index_url: str, ca_bundle: Path | None = None
) -> Checkout:
    """Bring ``spec`` into ``dest`` (which must not exist) as a git working tree at the resolved commit.

    A git source whose history is damaged — a shallow clone, or one missing objects that the commit's
    history (not its tree) needs — still gives a checkout: its history becomes one commit of the tree
    (:attr:`Checkout.history_cut` says why), since building needs the tree and rewriting a damaged
    history (``git gc``, ``git repack``) fails. A tree that misses objects cannot be checked out at all.
    """
    try:
        if spec.kind == "pypi":
            return _fetch_sdist(spec, dest, sdist_cache, index_url, ca_bundle)
        if spec.kind == "git" or _is_git_repository(Path(spec.location)):
            return _clone(spec, dest)
        shutil.copytree(spec.location, dest, ignore=_NOT_SOURCE, symlinks=True)
        return Checkout(spec, dest, _commit_all(dest))
    except git.GitCommandError as exc:
        raise SourceError(f"{spec.text}: git failed: {_git_reason(exc)}") from exc
    except PackageIndexError as exc:
        raise SourceError(str(exc)) from exc
    except (tarfile.TarError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{spec.text}: the source archive is unusable: {exc}") from exc
    except OSError as exc:
        raise SourceError(f"{spec.text}: {exc}") from exc


def _is_git_repository(path: Path) -> bool:
    """A working tree with ``.git``, or a bare repository (a mirror)."""
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def _split_ref(text: str, after: int) -> tuple[str, str | None]:
    at = text.rfind("@")
    if at <= after or "/" in text[at:]:
        return text, None
    return text[:at], text[at + 1 :] or None


def _clone(spec: SourceSpec, dest: Path) -> Checkout:
    repo = git.Repo.clone_from(spec.location, dest, no_checkout=True)
    ref = spec.ref or "HEAD"
    for candidate in (ref, f"origin/{ref}"):
        try:
            commit = repo.commit(candidate).hexsha
            break
        except (git.BadName, ValueError):
            continue
    else:
        raise SourceError(f"{spec.text}: no commit, tag or branch named {ref!r}")
    repo.git.checkout("--detach", "--force", commit)
    _dissociate(repo, dest)
    made = repo.commit(commit)
    damage = _damage(repo)
    if damage is not None:
        _cut_history(dest, made)
    _exclude_build_artefacts(dest)
    return Checkout(spec, dest, commit, committed_at=made.committed_datetime, history_cut=damage)


def _dissociate(repo: git.Repo, dest: Path) -> None:
    """Copy in the objects the clone borrows from elsewhere (a source cloned with ``--shared`` or
    ``--reference`` passes its alternates on): inside an image, that elsewhere does not exist."""
    alternates = dest / ".git" / "objects" / "info" / "alternates"
    if alternates.exists():
        repo.git.repack("-a", "-d", "-q")
        alternates.unlink()


def _damage(repo: git.Repo) -> str | None:
    """Why the history of HEAD cannot be kept as it is, or None when it is whole."""
    if repo.git.rev_parse("--is-shallow-repository") == "true":
        return "the source is a shallow clone"
    # Connectivity only: every object HEAD's history reaches must be there; blobs are not re-hashed.
    status, output, error = repo.git.fsck(
        "--connectivity-only", "--no-dangling", "--no-progress", "HEAD", with_extended_output=True,
        with_exceptions=False,
    )  # fmt: skip
    if status != 0:
        lines = f"{output}\n{error}".splitlines()
        missing = [line for line in lines if line.startswith(("missing", "error", "fatal"))]
        return f"the source's history misses objects ({(missing or ['git fsck failed'])[0].strip()})"
    return None


def _cut_history(dest: Path, made: git.Commit) -> None:
    """Replace the repository at ``dest`` by one holding a single commit of its working tree, with
    ``made``'s author, committer, dates and message."""
    # Read before the repository goes: GitPython loads a commit's fields lazily.
    identity = {
        "GIT_AUTHOR_NAME": made.author.name or "unknown",
        "GIT_AUTHOR_EMAIL": made.author.email or "unknown",
        "GIT_AUTHOR_DATE": made.authored_datetime.isoformat(),
        "GIT_COMMITTER_NAME": made.committer.name or "unknown",
        "GIT_COMMITTER_EMAIL": made.committer.email or "unknown",
        "GIT_COMMITTER_DATE": made.committed_datetime.isoformat(),
    }
    message = str(made.message)
    made.repo.close()
    shutil.rmtree(dest / ".git")
    repo = git.Repo.init(dest, initial_branch="main")
    repo.git.add("--all", "--force")  # a fresh checkout holds exactly the tree, ignored paths included
    with repo.git.custom_environment(**identity):
        repo.git.commit("--quiet", "--no-verify", "--allow-empty", "--cleanup=verbatim", "-m", message)
    repo.close()


def _fetch_sdist(
    spec: SourceSpec, dest: Path, cache: Path, index_url: str, ca_bundle: Path | None
) -> Checkout:
    archive = cached_sdist(spec.location, spec.ref, cache) if spec.ref else None
    if archive is None:
        sdist = find_sdist(spec.location, spec.ref, index_url, ca_bundle)
        archive, version = download(sdist, cache, ca_bundle), sdist.version
    else:
        version = spec.ref
    _unpack(archive, dest)
    return Checkout(spec, dest, _commit_all(dest), version=version)


def _unpack(archive: Path, dest: Path) -> None:
    """Extract an sdist into ``dest``, without its single top-level folder."""
    staging = dest.with_name(dest.name + ".unpack")
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(staging, filter="data")  # refuses absolute paths, '..' and device files
    entries = list(staging.iterdir())
    top = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
    top.rename(dest)
    shutil.rmtree(staging, ignore_errors=True)


def _commit_all(path: Path) -> str:
    repo = git.Repo.init(path, initial_branch="main")
    _exclude_build_artefacts(path)
    repo.git.add("--all")
    with repo.git.custom_environment(**_FIXED_IDENTITY):
        repo.git.commit("--quiet", "--no-verify", "--allow-empty", "-m", "Source snapshot")
    return repo.head.commit.hexsha


def _exclude_build_artefacts(path: Path) -> None:
    # .git/info/exclude rather than .gitignore: it is not part of the tree, so diffs stay clean.
    exclude = path / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as stream:
        stream.write("\n# build and test artefacts (forager)\n" + "\n".join(BUILD_ARTEFACTS) + "\n")


def _git_reason(exc: git.GitCommandError) -> str:
    lines = [line.strip() for line in str(exc.stderr).strip(" '\n").splitlines() if line.strip()]
    lines = [line.removeprefix("stderr: ").strip("'") for line in lines]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (fatal or lines or [f"exit {exc.status}"])[0]
