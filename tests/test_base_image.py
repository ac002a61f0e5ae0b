from pathlib import Path

import pytest

from images.base import (
    BASE_IMAGE,
    BASE_PACKAGES,
    BASE_VERSION,
    BASES,
    COVERAGE_DIR,
    DEFAULT_BASE,
    VERSION_LABEL,
    BaseImageError,
    base_dockerfile,
    base_for_python,
    ensure_base_image,
    host_debian_mirror,
)
from images.proxy import NetworkSettings


def _apt_dir(tmp_path: Path, sources_list: str = "", deb822: str = "") -> Path:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(sources_list)
    if deb822:
        (tmp_path / "sources.list.d" / "debian.sources").write_text(deb822)
    return tmp_path


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    apt = _apt_dir(
        tmp_path,
        "# comment\ndeb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main contrib\n",
    )
    assert host_debian_mirror(apt) == "http://mirror.example/debian"


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    apt = _apt_dir(
        tmp_path,
        deb822="Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n",
    )
    assert host_debian_mirror(apt) == "http://mirror.example/debian"


def test_no_mirror_says_to_pass_one(tmp_path: Path) -> None:
    with pytest.raises(BaseImageError, match="--mirror"):
        host_debian_mirror(_apt_dir(tmp_path, "deb http://x.example/ubuntu jammy main\n"))


def test_dockerfile_installs_every_base_package() -> None:
    dockerfile = base_dockerfile()
    assert dockerfile.startswith("# Made by")
    assert "FROM forager/debian:bookworm-minbase" in dockerfile
    assert "install -y --no-install-recommends " + " ".join(BASE_PACKAGES) in dockerfile


@pytest.mark.docker
def test_base_image_is_reused_and_runs_without_network(docker_client, tmp_path: Path) -> None:
    image = ensure_base_image(docker_client, NetworkSettings.from_environment(), log_dir=tmp_path)
    assert image.tag == BASE_IMAGE
    assert ensure_base_image(docker_client, NetworkSettings(), log_dir=tmp_path).built is False

    assert docker_client.images.get(BASE_IMAGE).labels[VERSION_LABEL] == BASE_VERSION
    config = docker_client.images.get(BASE_IMAGE).attrs["Config"]
    baked = " ".join(config["Env"] or [])
    assert "PIP_CERT" not in baked and "PROXY" not in baked.upper(), (
        "build-time settings leaked into the image"
    )

    script = (
        "set -e; python3 -m venv /tmp/v && /tmp/v/bin/pip --version >/dev/null && git --version >/dev/null"
        " && gcc --version >/dev/null && patch --version >/dev/null && uv --version >/dev/null"
        f" && test -f {COVERAGE_DIR}/pytest_cov/plugin.py && echo ready"
    )
    output = docker_client.containers.run(
        BASE_IMAGE,
        ["bash", "-c", script],
        network_mode="none",
        remove=True,
        labels={"forager.episode": "test"},
    )
    assert output.decode().strip() == "ready"


def test_each_base_names_its_release_and_python() -> None:
    assert base_for_python("3.11") is DEFAULT_BASE and base_for_python("3.13.5") is BASES[2]
    assert base_for_python("3.9") is BASES[0]
    assert base_for_python("3.12") is None
    trixie = base_dockerfile(BASES[2])
    assert "`forager images base --python 3.13`" in trixie
    assert "FROM forager/debian:trixie-minbase" in trixie and "--variant=minbase trixie" in trixie
    assert [base.log_folder for base in BASES] == ["base-bullseye", "base", "base-trixie"]
