import io
import json
import shutil
import tarfile
from pathlib import Path

import git
import pytest

from images.sources import BUILD_ARTEFACTS, SourceError, fetch, parse_source, read_source_file
from storage import ImageStatus
from tests.cli import forager
from tests.repos import commit, make_repo, python_project, write


@pytest.mark.parametrize(
    ("text", "kind", "location", "ref", "name"),
    [
        ("pypi:attrs==23.1.0", "pypi", "attrs", "23.1.0", "pypi__attrs"),
        ("pypi:Flask", "pypi", "flask", None, "pypi__flask"),
        ("https://github.com/Owner/Repo", "git", "https://github.com/Owner/Repo", None, "Owner__Repo"),
        ("https://github.com/o/r.git@v1.2", "git", "https://github.com/o/r.git", "v1.2", "o__r"),
        ("https://user@host.invalid/o/r@abc123", "git", "https://user@host.invalid/o/r", "abc123", "o__r"),
        ("git@host.invalid:o/r.git@main", "git", "git@host.invalid:o/r.git", "main", "o__r"),
        ("file:///srv/git/proj@feature", "git", "file:///srv/git/proj", "feature", "git__proj"),
    ],
)
def test_parse_remote_sources(text: str, kind: str, location: str, ref: str | None, name: str) -> None:
    spec = parse_source(text)
    assert (spec.kind, spec.location, spec.ref, spec.name) == (kind, location, ref, name)


def test_parse_local_paths(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "odd@name").mkdir()
    spec = parse_source(f"{tmp_path}/proj@v2")
    assert (spec.kind, spec.location, spec.ref, spec.name) == ("local", str(tmp_path / "proj"), "v2", "proj")
    assert parse_source(f"{tmp_path}/odd@name").location == str(tmp_path / "odd@name")
    with pytest.raises(SourceError, match="neither a git URL"):
        parse_source(f"{tmp_path}/missing")
    for bad in ("pypi:not a name", "pypi:six==one.two"):
        with pytest.raises(SourceError, match="pypi:NAME"):
            parse_source(bad)


def test_source_file_lines_and_swe_bench_jsonl(tmp_path: Path) -> None:
    listing = tmp_path / "sources.txt"
    record = {"repo": "psf/requests", "base_commit": "abc123", "instance_id": "x"}
    listing.write_text(f"# corpus\npypi:six==1.16.0   # setup.py, flat\n\n{json.dumps(record)}\n")
    specs = read_source_file(listing)
    assert [s.text for s in specs] == ["pypi:six==1.16.0", "https://github.com/psf/requests@abc123"]
    listing.write_text('pypi:six\n{"repo": "x"}\n')
    with pytest.raises(SourceError, match=r"sources.txt:2"):
        read_source_file(listing)


def test_local_git_repository_at_any_ref(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "upstream", python_project())
    first = repo.head.commit.hexsha
    repo.create_tag("v1")
    second = commit(repo, {"CHANGES": "more\n"}, "Second")
    repo.git.branch("feature", first)

    cache = tmp_path / "cache"
    for n, (ref, expected) in enumerate(
        [(None, second), ("v1", first), ("feature", first), (first[:8], first)]
    ):
        suffix = f"@{ref}" if ref else ""
        checkout = fetch(
            parse_source(f"{tmp_path}/upstream{suffix}"), tmp_path / f"co{n}", sdist_cache=cache, index_url=""
        )
        assert checkout.commit == expected
        assert git.Repo(checkout.path).head.commit.hexsha == expected
        assert not git.Repo(checkout.path).is_dirty(untracked_files=True)
    assert repo.head.commit.hexsha == second and repo.active_branch.name == "main", (
        "the user's tree is untouched"
    )
    with pytest.raises(SourceError, match="no commit, tag or branch named 'nope'"):
        fetch(parse_source(f"{tmp_path}/upstream@nope"), tmp_path / "bad", sdist_cache=cache, index_url="")


def test_git_url_and_clone_failure(tmp_path: Path) -> None:
    make_repo(tmp_path / "upstream", python_project())
    checkout = fetch(
        parse_source(f"file://{tmp_path}/upstream"), tmp_path / "co", sdist_cache=tmp_path, index_url=""
    )
    assert (checkout.path / "src" / "calc" / "__init__.py").is_file()
    with pytest.raises(SourceError, match="git failed: fatal:"):
        fetch(
            parse_source(f"file://{tmp_path}/missing"), tmp_path / "co2", sdist_cache=tmp_path, index_url=""
        )


def test_plain_directory_gets_a_deterministic_commit(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write(
            tmp_path / name, {**python_project(), ".venv/bin/python": "", "src/calc/__pycache__/x.pyc": "x"}
        )
    one = fetch(parse_source(str(tmp_path / "a")), tmp_path / "co1", sdist_cache=tmp_path, index_url="")
    two = fetch(parse_source(str(tmp_path / "b")), tmp_path / "co2", sdist_cache=tmp_path, index_url="")
    assert one.commit == two.commit
    assert not (one.path / ".venv").exists()
    tracked = git.Repo(one.path).git.ls_files().split()
    assert "src/calc/__init__.py" in tracked and not any("__pycache__" in t for t in tracked)
    exclude = (one.path / ".git" / "info" / "exclude").read_text()
    assert all(pattern in exclude for pattern in BUILD_ARTEFACTS)


def _sdist(path: Path, members: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_cached_sdist_needs_no_index(tmp_path: Path) -> None:
    cache = tmp_path / "sdists"
    cache.mkdir()
    files = {f"my_pkg-1.0/{k}": v for k, v in python_project("my_pkg").items()}
    files["my_pkg-1.0/src/my_pkg.egg-info/PKG-INFO"] = "Name: my-pkg\n"
    _sdist(cache / "my_pkg-1.0.tar.gz", files)
    checkout = fetch(
        parse_source("pypi:my-pkg==1.0"), tmp_path / "co", sdist_cache=cache, index_url="http://127.0.0.1:9/"
    )
    assert checkout.version == "1.0"
    assert (checkout.path / "pyproject.toml").is_file(), "the sdist's top folder is stripped"
    assert "src/my_pkg.egg-info/PKG-INFO" not in git.Repo(checkout.path).git.ls_files()


def test_unsafe_sdist_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "sdists"
    cache.mkdir()
    _sdist(cache / "evil-1.0.tar.gz", {"evil-1.0/setup.py": "", "../../escaped": "x"})
    with pytest.raises(SourceError, match="unusable"):
        fetch(parse_source("pypi:evil==1.0"), tmp_path / "co", sdist_cache=cache, index_url="")
    assert not (tmp_path / "escaped").exists()


def test_unreachable_index_is_a_clear_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot reach the package index"):
        fetch(
            parse_source("pypi:six"),
            tmp_path / "co",
            sdist_cache=tmp_path,
            index_url="http://127.0.0.1:9/simple",
        )


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_unreadable_source_list_is_one_error_line_from_the_cli(tmp_path: Path, kind: str) -> None:
    listing = tmp_path / "sources.txt"
    if kind == "directory":
        listing.mkdir()
    elif kind == "binary":
        listing.write_bytes(b"\xff\xfe\x00broken")
    result = forager("images", "build", "--from-file", str(listing), home=tmp_path / "home")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read the source list"), result.stderr
    assert str(listing) in lines[0]


def _damaged_history(tmp_path: Path, damage: str) -> tuple[Path, git.Repo]:
    """A three-commit repository, then a clone of it damaged by ``damage``: ``shallow`` (``git clone
    --depth 1``) or ``missing`` (an object of the history, not of the newest tree, deleted)."""
    full = make_repo(tmp_path / "full", python_project())
    commit(full, {"src/calc/more.py": "ONE = 1\n"}, "Add more")
    commit(full, {"src/calc/more.py": "ONE = 1\nTWO = 2\n"}, "Add two\n\n# not a comment: kept as it is")
    damaged = tmp_path / damage
    if damage == "shallow":
        git.Repo.clone_from(f"file://{full.working_dir}", damaged, depth=1).close()
    else:
        # A copy, not a clone: a clone would pack the objects; the copy keeps them loose, one a file.
        git.Repo.clone_from(full.working_dir, damaged, no_hardlinks=True).close()
        blob = full.git.rev_parse("HEAD~1:src/calc/more.py")
        (damaged / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    return damaged, full


@pytest.mark.parametrize("damage", ["shallow", "missing"])
def test_a_damaged_history_is_cut_to_the_commits_tree(tmp_path: Path, damage: str) -> None:
    damaged, full = _damaged_history(tmp_path, damage)
    if damage == "missing":
        with pytest.raises(git.GitCommandError):
            git.Repo(damaged).git.gc("--prune=now")  # what sanitizing a build used to fail on
    newest = full.head.commit
    checkout = fetch(parse_source(str(damaged)), tmp_path / "src", sdist_cache=tmp_path / "c", index_url="")
    assert checkout.commit == newest.hexsha, "the source's commit id is what the image records"
    why = {"shallow": "the source is a shallow clone", "missing": "the source's history misses objects"}
    assert checkout.history_cut is not None and checkout.history_cut.startswith(why[damage])
    repo = git.Repo(checkout.path)
    (cut,) = list(repo.iter_commits())
    assert cut.tree.hexsha == newest.tree.hexsha, "the same tree"
    assert (cut.message, cut.author.email, cut.authored_datetime) == (
        newest.message, newest.author.email, newest.authored_datetime
    )
    assert repo.git.status("--porcelain") == ""
    repo.git.gc("--prune=now")  # the history sanitizing rewrites is whole now
    assert repo.git.fsck("--no-dangling") == ""


def test_borrowed_objects_are_copied_in(tmp_path: Path) -> None:
    full = make_repo(tmp_path / "full", python_project())
    commit(full, {"src/calc/more.py": "ONE = 1\n"}, "Add more")
    git.Repo.clone_from(full.working_dir, tmp_path / "shared", shared=True).close()
    shared = parse_source(str(tmp_path / "shared"))
    checkout = fetch(shared, tmp_path / "src", sdist_cache=tmp_path, index_url="")
    assert not (checkout.path / ".git/objects/info/alternates").exists()
    assert checkout.history_cut is None
    full.close()
    shutil.rmtree(tmp_path / "full")  # what the objects were borrowed from is gone: the clone stands alone
    repo = git.Repo(checkout.path)
    assert len(list(repo.iter_commits())) == 2
    assert repo.git.fsck("--no-dangling") == ""


def test_a_whole_history_is_kept(tmp_path: Path) -> None:
    full = make_repo(tmp_path / "full", python_project())
    commit(full, {"src/calc/more.py": "ONE = 1\n"}, "Add more")
    checkout = fetch(parse_source(full.working_dir), tmp_path / "src", sdist_cache=tmp_path, index_url="")
    assert checkout.history_cut is None
    kept = [c.hexsha for c in git.Repo(checkout.path).iter_commits()]
    assert kept == [c.hexsha for c in full.iter_commits()]


@pytest.mark.docker
@pytest.mark.parametrize("damage", ["shallow", "missing"])
def test_a_damaged_clone_still_builds(builder, docker_client, tmp_path: Path, damage: str) -> None:
    damaged, full = _damaged_history(tmp_path, damage)

    result = builder.build(parse_source(str(damaged)))

    assert result.status == ImageStatus.READY, result.reason
    assert result.commit == full.head.commit.hexsha
    labels = docker_client.images.get(result.tag).attrs["Config"]["Labels"]
    assert labels["forager.history-cut"].startswith("the source")
    log = docker_client.containers.run(
        result.tag, ["git", "log", "--format=%s"], remove=True, network_mode="none"
    ).decode()
    assert log.strip() == "Add two", "one commit: the source's newest, its message kept"
