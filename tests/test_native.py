"""Native code: the header→package map, compiler errors read into repairs and failure classes, detection.

Compiler, linker, pkg-config and shell messages are produced by running the real tools on this machine
(gcc, ld, pkg-config, sh) in conditions that make them fail; psycopg2's and uv's wording are excerpts
of real runs.
"""

# uv marks failures with U+00D7 (multiplication sign); the excerpts keep its output verbatim.
# ruff: noqa: RUF001

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from images.header_packages import (
    HEADERS,
    LIBRARIES,
    PKG_CONFIG,
    TOOLS,
    is_package_name,
    package_for_header,
    package_for_library,
    package_for_pkg_config,
    package_for_tool,
    pip_for_header,
)
from images.native import apt_step, compiler_error, detect_native, install_failure
from images.recipe import RecipeStep
from images.repair import diagnose
from images.steps import apply_repair
from tests.repos import write


def run(command: list[str], cwd: Path, **env: str) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode != 0, "the tool was expected to fail"
    return done.stdout + done.stderr


def pairs(log: str) -> list[tuple[str, str]]:
    return [(repair.kind, repair.value) for repair in diagnose(log)]


@pytest.mark.parametrize(
    ("header", "package"),
    [
        ("yaml.h", "libyaml-dev"),
        ("ffi.h", "libffi-dev"),
        ("openssl/ssl.h", "libssl-dev"),
        ("libxml/xmlversion.h", "libxml2-dev"),
        ("libxml2/libxml/parser.h", "libxml2-dev"),
        ("libxslt/xslt.h", "libxslt1-dev"),
        ("zlib.h", "zlib1g-dev"),
        ("bzlib.h", "libbz2-dev"),
        ("lzma.h", "liblzma-dev"),
        ("sqlite3.h", "libsqlite3-dev"),
        ("Python.h", "python3-dev"),
        ("gmp.h", "libgmp-dev"),
        ("hdf5.h", "libhdf5-dev"),
        ("png.h", "libpng-dev"),
        ("jpeglib.h", "libjpeg-dev"),
        ("ft2build.h", "libfreetype-dev"),
        ("libpq-fe.h", "libpq-dev"),
        ("mysql/mysql.h", "default-libmysqlclient-dev"),
        ("gssapi/gssapi_krb5.h", "libkrb5-dev"),
        ("ldap.h", "libldap-dev"),
        ("sasl/sasl.h", "libsasl2-dev"),
        ("snappy-c.h", "libsnappy-dev"),
        ("lz4.h", "liblz4-dev"),
        ("zstd.h", "libzstd-dev"),
        ("curl/curl.h", "libcurl4-openssl-dev"),
        ("pcre.h", "libpcre3-dev"),
        ("ncurses.h", "libncurses-dev"),
        ("readline/readline.h", "libreadline-dev"),
        ("tk.h", "tk-dev"),
        ("cblas.h", "libopenblas-dev"),
        ("<yaml.h>", "libyaml-dev"),
    ],
)
def test_common_headers_map_to_their_debian_packages(header: str, package: str) -> None:
    assert package_for_header(header) == package


def test_unknown_headers_and_pip_headers() -> None:
    assert package_for_header("forager_nowhere.h") is None
    assert package_for_header("numpy/arrayobject.h") is None
    assert pip_for_header("numpy/arrayobject.h") == "numpy"
    assert pip_for_header("pybind11/pybind11.h") == "pybind11"
    assert pip_for_header("yaml.h") is None


def test_libraries_pkg_config_modules_and_tools() -> None:
    assert package_for_library("yaml") == "libyaml-dev"
    assert package_for_library("pq") == "libpq-dev"
    assert package_for_library("forager_nowhere") is None
    assert package_for_pkg_config("libffi") == "libffi-dev"
    assert package_for_pkg_config("yaml-0.1") == "libyaml-dev"
    assert package_for_tool("pg_config") == "libpq-dev"
    assert package_for_tool("/usr/bin/mysql_config") == "default-libmysqlclient-dev"
    assert package_for_tool("cargo") == "rustc cargo"
    assert package_for_tool("forager-nowhere") is None


def test_every_mapped_package_is_spelled_as_apt_accepts_it() -> None:
    for table in (HEADERS, LIBRARIES, PKG_CONFIG, TOOLS):
        for packages in table.values():
            assert all(is_package_name(name) for name in packages.split()), packages
    assert not is_package_name("-y") and not is_package_name("libfoo*") and not is_package_name("a=1")


@pytest.fixture
def yaml_source(tmp_path: Path) -> Path:
    write(tmp_path, {"ext.c": "#include <yaml.h>\nint main(void) { return 0; }\n", "include/README": ""})
    return tmp_path


def test_a_missing_header_from_gcc_installs_its_package(yaml_source: Path) -> None:
    # -nostdinc: gcc searches no system folder, so the header is missing whatever this machine has.
    log = run(["gcc", "-nostdinc", "-I", "include", "-c", "ext.c", "-o", "ext.o"], yaml_source)
    assert "fatal error: yaml.h: No such file or directory" in log
    assert pairs(log)[0] == ("apt", "libyaml-dev")
    kind, reason = install_failure("the project, editable", log, "error: command 'gcc' failed")
    assert kind == "native_build_failed"
    assert reason.endswith("ext.c:1:10: fatal error: yaml.h: No such file or directory")


def test_a_header_nothing_ships_is_a_native_failure_with_no_repair(tmp_path: Path) -> None:
    write(tmp_path, {"ext.c": "#include <forager_nowhere.h>\n"})
    log = run(["gcc", "-c", "ext.c", "-o", "ext.o"], tmp_path)
    assert [kind for kind, _ in pairs(log)] == []
    assert "forager_nowhere.h" in install_failure("x", log, "")[1]


def test_a_missing_library_from_the_linker_installs_its_package(tmp_path: Path) -> None:
    # -nostdlib: ld searches only the folders given, so -lyaml is missing whatever this machine has.
    log = run(["ld", "-nostdlib", "-o", "out", "-lyaml"], tmp_path)
    assert pairs(log)[0] == ("apt", "libyaml-dev")
    assert install_failure("x", log, "")[0] == "native_build_failed"


def test_a_missing_pkg_config_module_installs_its_package(tmp_path: Path) -> None:
    empty = {"PKG_CONFIG_LIBDIR": str(tmp_path), "PKG_CONFIG_PATH": ""}
    log = run(["pkg-config", "--cflags", "libffi"], tmp_path, **empty)
    assert pairs(log)[0] == ("apt", "libffi-dev")


def test_a_missing_tool_from_the_shell_installs_its_package(tmp_path: Path) -> None:
    log = run(["/bin/sh", "-c", "mysql_config --cflags"], tmp_path, PATH="/nonexistent")
    assert pairs(log)[0] == ("apt", "default-libmysqlclient-dev")
    log = run(["/bin/sh", "-c", "cython x.pyx"], tmp_path, PATH="/nonexistent")
    assert pairs(log)[0] == ("install", "Cython")
    log = run(["/bin/sh", "-c", "forager-nowhere"], tmp_path, PATH="/nonexistent")
    assert pairs(log) == []


PSYCOPG2 = """
      running egg_info
      writing psycopg2.egg-info/PKG-INFO

      Error: pg_config executable not found.

      pg_config is required to build psycopg2 from source.  Please add the directory
      containing pg_config to the $PATH or specify the full executable path with the
      option:
    [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
error: metadata-generation-failed
"""

UV_NUMPY = """
  × Failed to build `fastmod @ file:///repo`
  ├─▶ The build backend returned an error
  ╰─▶ Call to `setuptools.build_meta.build_editable` failed (exit status: 1)

      [stderr]
      src/fastmod/_mod.c:2:10: fatal error: numpy/arrayobject.h: No such file or directory
          2 | #include <numpy/arrayobject.h>
            |          ^~~~~~~~~~~~~~~~~~~~~
      compilation terminated.
      error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1
"""

SETUPTOOLS_RUST = """
      running build_rust
      error: can't find Rust compiler
"""


def test_tool_errors_of_real_builds() -> None:
    assert pairs(textwrap.dedent(PSYCOPG2))[0] == ("apt", "libpq-dev")
    assert pairs(textwrap.dedent(SETUPTOOLS_RUST))[0] == ("apt", "rustc cargo")
    # numpy's headers come with numpy: install it and build without isolation.
    assert pairs(UV_NUMPY)[0] == ("no_build_isolation", "numpy")
    assert compiler_error(UV_NUMPY) == (
        "src/fastmod/_mod.c:2:10: fatal error: numpy/arrayobject.h: No such file or directory"
    )


def test_an_apt_repair_installs_the_packages_before_the_step_again() -> None:
    step = RecipeStep("uv pip install -e .", "the project, editable")
    repair = diagnose("x.c:1:10: fatal error: yaml.h: No such file or directory\n")[0]
    first, again = apply_repair(repair, step)
    assert first.run == (
        "apt-get update -q && apt-get install -y -q --no-install-recommends libyaml-dev"
        " && rm -rf /var/lib/apt/lists/*"
    )
    assert "yaml.h" in first.why and again == step
    rust = apply_repair(diagnose(SETUPTOOLS_RUST)[0], step)[0].run
    # Bookworm's rustc-web (1.85) first; a suite without it has a new enough plain rustc.
    assert rust == (
        "apt-get update -q && { apt-get install -y -q --no-install-recommends rustc-web cargo-web"
        " || apt-get install -y -q --no-install-recommends rustc cargo; } && rm -rf /var/lib/apt/lists/*"
    )


def test_a_failure_without_a_compiler_line_stays_install_failed() -> None:
    log = "  × No solution found when resolving dependencies:\n  ╰─▶ Because nothing satisfies x\n"
    assert install_failure("extras", log, "Because nothing satisfies x") == (
        "install_failed",
        "extras: Because nothing satisfies x",
    )


def test_apt_step_deduplicates_and_quotes() -> None:
    step = apt_step(["libyaml-dev", "zlib1g-dev", "libyaml-dev"], "why", required=False)
    assert "install -y -q --no-install-recommends libyaml-dev zlib1g-dev &&" in step.run
    assert not step.required


def test_a_malformed_build_system_table_is_no_native_code(tmp_path: Path) -> None:
    odd = write(tmp_path, {"pyproject.toml": "[build-system]\nrequires = 5\n", "pkg/__init__.py": ""})
    assert detect_native(odd).languages == ()


def test_detect_c_cython_and_rust(tmp_path: Path) -> None:
    assert detect_native(write(tmp_path / "pure", {"setup.py": "from setuptools import setup\nsetup()\n",
                                                   "pkg/__init__.py": ""})).languages == ()  # fmt: skip
    c = detect_native(
        write(
            tmp_path / "c",
            {
                "setup.py": "from setuptools import Extension, setup\n"
                'setup(ext_modules=[Extension("pkg._a", ["pkg/_a.c"]), Extension("pkg._b", ["pkg/_b.c"])])\n',
                "pkg/_a.c": "",
                "pkg/_b.pyx": "",
                "tests/data/sample.c": "",
            },
        )
    )
    assert c.languages == ("C", "Cython") and not c.rust
    assert c.ungenerated == ("pkg/_b.c",)
    rust = detect_native(
        write(
            tmp_path / "rust",
            {"pyproject.toml": '[build-system]\nrequires = ["maturin>=1"]\nbuild-backend = "maturin"\n',
             "Cargo.toml": "[package]\nname = 'x'\n", "src/lib.rs": ""},
        )
    )  # fmt: skip
    assert rust.rust and rust.languages == ("Rust",)
    setuptools_rust = detect_native(
        write(tmp_path / "srust", {"pyproject.toml": '[build-system]\nrequires = ["setuptools-rust"]\n'})
    )
    assert setuptools_rust.rust
    broken = detect_native(write(tmp_path / "broken", {"pyproject.toml": "[build-system\n"}))
    assert broken.languages == ()
