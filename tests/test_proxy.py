from pathlib import Path

import pytest

from images.proxy import (
    CONTAINER_CA_PATH,
    CABundleError,
    NetworkSettings,
    count_certificates,
    resolve_ca_bundle,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "corp.pem"
    path.write_text(PEM * 2)
    return path


def test_explicit_option_wins_over_environment(bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_text(PEM)
    assert resolve_ca_bundle(bundle, {"SSL_CERT_FILE": str(other)}) == bundle.resolve()


def test_missing_explicit_bundle_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CABundleError, match="--ca-bundle"):
        resolve_ca_bundle(tmp_path / "nope.pem", {})


def test_environment_variables_in_order_skipping_missing_files(bundle: Path, tmp_path: Path) -> None:
    env = {"SSL_CERT_FILE": str(tmp_path / "gone.pem"), "REQUESTS_CA_BUNDLE": str(bundle), "PIP_CERT": "/x"}
    assert resolve_ca_bundle(None, env) == bundle.resolve()


def test_counts_certificates(bundle: Path) -> None:
    assert count_certificates(bundle) == 2


def test_build_containers_get_the_bundle_and_proxies_in_both_spellings(bundle: Path) -> None:
    settings = NetworkSettings.from_environment(
        bundle, {"https_proxy": "http://127.0.0.1:3128", "NO_PROXY": "x"}
    )
    env = settings.environment()
    assert env["PIP_CERT"] == env["GIT_SSL_CAINFO"] == CONTAINER_CA_PATH
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128"
    assert env["no_proxy"] == "x"
    (mount,) = settings.container_options()["mounts"]
    assert (mount["Source"], mount["Target"]) == (str(bundle.resolve()), CONTAINER_CA_PATH)
    assert mount["ReadOnly"] is True
    assert CONTAINER_CA_PATH.startswith(next(iter(settings.container_options()["tmpfs"])))
    assert settings.apt_options() == [f"-oAcquire::https::CAInfo={CONTAINER_CA_PATH}"]


def test_without_a_bundle_nothing_is_mounted() -> None:
    settings = NetworkSettings(ca_bundle=None)
    assert settings.environment() == {}
    assert settings.container_options() == {}
    assert settings.apt_options() == []


def test_a_corporate_index_reaches_pip_and_uv() -> None:
    env = NetworkSettings.from_environment(
        None, {"PIP_INDEX_URL": "https://mirror.invalid/simple"}
    ).environment()
    assert env["PIP_INDEX_URL"] == env["UV_INDEX_URL"] == "https://mirror.invalid/simple"
