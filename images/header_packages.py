"""Which Debian (bookworm) package provides a missing C header, library, pkg-config module or tool.

A native extension that fails to compile says what it lacked in a compiler's words: ``fatal error:
yaml.h: No such file or directory``, ``/usr/bin/ld: cannot find -lyaml``, ``Package libffi was not
found in the pkg-config search path``, ``pg_config executable not found``. Repair looks the name up
here and installs the package with apt-get. This is the maintained map (as :mod:`images.import_map` is
for Python modules): one table per kind of name, each entry checked against bookworm's package lists.
A few headers and tools come from PyPI instead (numpy's headers, pybind11's, Cython): those are in
:data:`PIP_HEADERS` and :data:`PIP_TOOLS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Header path as ``#include`` names it -> Debian package. A key ending in ``/`` matches every header
#: under that directory (``openssl/`` matches ``openssl/ssl.h``).
HEADERS: Mapping[str, str] = {
    "Python.h": "python3-dev",
    "yaml.h": "libyaml-dev",
    "ffi.h": "libffi-dev",
    "openssl/": "libssl-dev",
    "libxml/": "libxml2-dev",
    "libxslt/": "libxslt1-dev",
    "libexslt/": "libxslt1-dev",
    "zlib.h": "zlib1g-dev",
    "zconf.h": "zlib1g-dev",
    "bzlib.h": "libbz2-dev",
    "lzma.h": "liblzma-dev",
    "sqlite3.h": "libsqlite3-dev",
    "gmp.h": "libgmp-dev",
    "gmpxx.h": "libgmp-dev",
    "mpfr.h": "libmpfr-dev",
    "mpc.h": "libmpc-dev",
    "hdf5.h": "libhdf5-dev",
    "H5public.h": "libhdf5-dev",
    "png.h": "libpng-dev",
    "jpeglib.h": "libjpeg-dev",
    "turbojpeg.h": "libturbojpeg0-dev",
    "tiff.h": "libtiff-dev",
    "tiffio.h": "libtiff-dev",
    "webp/": "libwebp-dev",
    "lcms2.h": "liblcms2-dev",
    "openjpeg-2.5/": "libopenjp2-7-dev",
    "ft2build.h": "libfreetype-dev",
    "freetype/": "libfreetype-dev",
    "libpq-fe.h": "libpq-dev",
    "pg_config.h": "libpq-dev",
    "postgres_ext.h": "libpq-dev",
    "mysql.h": "default-libmysqlclient-dev",
    "mysql/": "default-libmysqlclient-dev",
    "krb5.h": "libkrb5-dev",
    "krb5/": "libkrb5-dev",
    "gssapi/": "libkrb5-dev",
    "gssapi.h": "libkrb5-dev",
    "ldap.h": "libldap-dev",
    "lber.h": "libldap-dev",
    "sasl/": "libsasl2-dev",
    "snappy-c.h": "libsnappy-dev",
    "snappy.h": "libsnappy-dev",
    "lz4.h": "liblz4-dev",
    "lz4frame.h": "liblz4-dev",
    "zstd.h": "libzstd-dev",
    "brotli/": "libbrotli-dev",
    "blosc.h": "libblosc-dev",
    "xxhash.h": "libxxhash-dev",
    "curl/": "libcurl4-openssl-dev",
    "pcre.h": "libpcre3-dev",
    "pcre2.h": "libpcre2-dev",
    "re2/": "libre2-dev",
    "ncurses.h": "libncurses-dev",
    "curses.h": "libncurses-dev",
    "term.h": "libncurses-dev",
    "readline/": "libreadline-dev",
    "tk.h": "tk-dev",
    "tcl.h": "tcl-dev",
    "cblas.h": "libopenblas-dev",
    "lapacke.h": "liblapacke-dev",
    "fftw3.h": "libfftw3-dev",
    "gsl/": "libgsl-dev",
    "boost/": "libboost-dev",
    "eigen3/": "libeigen3-dev",
    "Eigen/": "libeigen3-dev",
    "mpi.h": "libopenmpi-dev",
    "netcdf.h": "libnetcdf-dev",
    "fitsio.h": "libcfitsio-dev",
    "geos_c.h": "libgeos-dev",
    "gdal.h": "libgdal-dev",
    "proj.h": "libproj-dev",
    "uuid/": "uuid-dev",
    "gdbm.h": "libgdbm-dev",
    "expat.h": "libexpat1-dev",
    "magic.h": "libmagic-dev",
    "sodium.h": "libsodium-dev",
    "argon2.h": "libargon2-dev",
    "gnutls/": "libgnutls28-dev",
    "nettle/": "nettle-dev",
    "libssh2.h": "libssh2-1-dev",
    "git2.h": "libgit2-dev",
    "archive.h": "libarchive-dev",
    "zmq.h": "libzmq3-dev",
    "hiredis/": "libhiredis-dev",
    "librdkafka/": "librdkafka-dev",
    "libmemcached/": "libmemcached-dev",
    "leveldb/": "libleveldb-dev",
    "lmdb.h": "liblmdb-dev",
    "event2/": "libevent-dev",
    "uv.h": "libuv1-dev",
    "jansson.h": "libjansson-dev",
    "unicode/": "libicu-dev",
    "glib.h": "libglib2.0-dev",
    "cairo.h": "libcairo2-dev",
    "cairo/": "libcairo2-dev",
    "graphviz/": "libgraphviz-dev",
    "dbus/": "libdbus-1-dev",
    "systemd/": "libsystemd-dev",
    "libudev.h": "libudev-dev",
    "sys/capability.h": "libcap-dev",
    "attr/xattr.h": "libattr1-dev",
    "acl/libacl.h": "libacl1-dev",
    "sys/acl.h": "libacl1-dev",
    "security/pam_appl.h": "libpam0g-dev",
    "libusb-1.0/": "libusb-1.0-0-dev",
    "portaudio.h": "portaudio19-dev",
    "sndfile.h": "libsndfile1-dev",
    "alsa/": "libasound2-dev",
    "ogg/": "libogg-dev",
    "vorbis/": "libvorbis-dev",
    "libavcodec/": "libavcodec-dev",
    "libavformat/": "libavformat-dev",
    "libavutil/": "libavutil-dev",
    "libswscale/": "libswscale-dev",
    "X11/": "libx11-dev",
    "xcb/": "libxcb1-dev",
    "GL/": "libgl-dev",
    "SDL2/": "libsdl2-dev",
    "tidy.h": "libtidy-dev",
    "hunspell/": "libhunspell-dev",
    "mecab.h": "libmecab-dev",
}

#: Headers that come with a Python distribution rather than a Debian package: the build needs that
#: distribution importable, which means building without isolation when the project did not declare it.
PIP_HEADERS: Mapping[str, str] = {
    "numpy/": "numpy",
    "pybind11/": "pybind11",
    "nanobind/": "nanobind",
}

#: Linker library name (``-lNAME``) -> Debian package.
LIBRARIES: Mapping[str, str] = {
    "yaml": "libyaml-dev",
    "ffi": "libffi-dev",
    "ssl": "libssl-dev",
    "crypto": "libssl-dev",
    "xml2": "libxml2-dev",
    "xslt": "libxslt1-dev",
    "exslt": "libxslt1-dev",
    "z": "zlib1g-dev",
    "bz2": "libbz2-dev",
    "lzma": "liblzma-dev",
    "sqlite3": "libsqlite3-dev",
    "gmp": "libgmp-dev",
    "mpfr": "libmpfr-dev",
    "hdf5": "libhdf5-dev",
    "png": "libpng-dev",
    "png16": "libpng-dev",
    "jpeg": "libjpeg-dev",
    "tiff": "libtiff-dev",
    "freetype": "libfreetype-dev",
    "pq": "libpq-dev",
    "mysqlclient": "default-libmysqlclient-dev",
    "mariadb": "libmariadb-dev",
    "krb5": "libkrb5-dev",
    "gssapi_krb5": "libkrb5-dev",
    "ldap": "libldap-dev",
    "lber": "libldap-dev",
    "sasl2": "libsasl2-dev",
    "snappy": "libsnappy-dev",
    "lz4": "liblz4-dev",
    "zstd": "libzstd-dev",
    "curl": "libcurl4-openssl-dev",
    "pcre": "libpcre3-dev",
    "pcre2-8": "libpcre2-dev",
    "ncurses": "libncurses-dev",
    "ncursesw": "libncurses-dev",
    "tinfo": "libncurses-dev",
    "readline": "libreadline-dev",
    "blas": "libopenblas-dev",
    "cblas": "libopenblas-dev",
    "openblas": "libopenblas-dev",
    "lapack": "liblapack-dev",
    "fftw3": "libfftw3-dev",
    "gsl": "libgsl-dev",
    "uuid": "uuid-dev",
    "magic": "libmagic-dev",
    "sodium": "libsodium-dev",
    "zmq": "libzmq3-dev",
    "expat": "libexpat1-dev",
    "gdbm": "libgdbm-dev",
    "geos_c": "libgeos-dev",
    "gdal": "libgdal-dev",
    "proj": "libproj-dev",
    "netcdf": "libnetcdf-dev",
    "cfitsio": "libcfitsio-dev",
    "icuuc": "libicu-dev",
    "archive": "libarchive-dev",
    "git2": "libgit2-dev",
    "ssh2": "libssh2-1-dev",
    "event": "libevent-dev",
    "uv": "libuv1-dev",
    "cairo": "libcairo2-dev",
    "gfortran": "gfortran",
}

#: pkg-config module -> Debian package.
PKG_CONFIG: Mapping[str, str] = {
    "yaml-0.1": "libyaml-dev",
    "libffi": "libffi-dev",
    "openssl": "libssl-dev",
    "libssl": "libssl-dev",
    "libcrypto": "libssl-dev",
    "libxml-2.0": "libxml2-dev",
    "libxslt": "libxslt1-dev",
    "libexslt": "libxslt1-dev",
    "zlib": "zlib1g-dev",
    "liblzma": "liblzma-dev",
    "sqlite3": "libsqlite3-dev",
    "libpq": "libpq-dev",
    "mysqlclient": "default-libmysqlclient-dev",
    "libmariadb": "libmariadb-dev",
    "mariadb": "libmariadb-dev",
    "krb5": "libkrb5-dev",
    "krb5-gssapi": "libkrb5-dev",
    "libzstd": "libzstd-dev",
    "liblz4": "liblz4-dev",
    "libcurl": "libcurl4-openssl-dev",
    "libpcre": "libpcre3-dev",
    "libpcre2-8": "libpcre2-dev",
    "ncurses": "libncurses-dev",
    "ncursesw": "libncurses-dev",
    "readline": "libreadline-dev",
    "libpng": "libpng-dev",
    "libjpeg": "libjpeg-dev",
    "freetype2": "libfreetype-dev",
    "hdf5": "libhdf5-dev",
    "openblas": "libopenblas-dev",
    "blas": "libopenblas-dev",
    "lapack": "liblapack-dev",
    "fftw3": "libfftw3-dev",
    "gsl": "libgsl-dev",
    "uuid": "uuid-dev",
    "libsodium": "libsodium-dev",
    "libzmq": "libzmq3-dev",
    "expat": "libexpat1-dev",
    "glib-2.0": "libglib2.0-dev",
    "cairo": "libcairo2-dev",
    "gobject-introspection-1.0": "libgirepository1.0-dev",
    "libsystemd": "libsystemd-dev",
    "dbus-1": "libdbus-1-dev",
    "libgit2": "libgit2-dev",
    "libarchive": "libarchive-dev",
    "icu-uc": "libicu-dev",
    "libcap": "libcap-dev",
    "libudev": "libudev-dev",
    "libusb-1.0": "libusb-1.0-0-dev",
    "portaudio-2.0": "portaudio19-dev",
    "sndfile": "libsndfile1-dev",
    "x11": "libx11-dev",
    "sdl2": "libsdl2-dev",
    "gdal": "libgdal-dev",
    "proj": "libproj-dev",
    "geos": "libgeos-dev",
    "netcdf": "libnetcdf-dev",
    "cfitsio": "libcfitsio-dev",
}

#: Executable a build runs -> Debian package (``pg_config`` for psycopg2, ``mysql_config`` for
#: mysqlclient, the Rust toolchain for setuptools-rust and maturin, CMake for scikit-build).
TOOLS: Mapping[str, str] = {
    "pg_config": "libpq-dev",
    "mysql_config": "default-libmysqlclient-dev",
    "mariadb_config": "libmariadb-dev",
    "xml2-config": "libxml2-dev",
    "xslt-config": "libxslt1-dev",
    "curl-config": "libcurl4-openssl-dev",
    "krb5-config": "libkrb5-dev",
    "gdal-config": "libgdal-dev",
    "geos-config": "libgeos-dev",
    "freetype-config": "libfreetype-dev",
    "pcre-config": "libpcre3-dev",
    "sdl2-config": "libsdl2-dev",
    "nc-config": "libnetcdf-dev",
    "h5cc": "libhdf5-dev",
    "pkg-config": "pkg-config",
    "cmake": "cmake",
    "ninja": "ninja-build",
    "swig": "swig",
    "swig4.0": "swig",
    "gfortran": "gfortran",
    "rustc": "rustc cargo",
    "cargo": "rustc cargo",
    "go": "golang-go",
    "protoc": "protobuf-compiler",
    "node": "nodejs",
    "npm": "npm",
    "gcc": "gcc",
    "cc": "gcc",
    "x86_64-linux-gnu-gcc": "gcc",
    "g++": "g++",
    "c++": "g++",
    "x86_64-linux-gnu-g++": "g++",
    "make": "make",
    "autoconf": "autoconf",
    "automake": "automake",
    "libtool": "libtool",
    "flex": "flex",
    "bison": "bison",
    "nasm": "nasm",
    "yasm": "yasm",
    "patchelf": "patchelf",
    "git": "git",
}

#: Executable a build runs -> the PyPI distribution that installs it into the project's venv.
PIP_TOOLS: Mapping[str, str] = {
    "cython": "Cython",
    "cythonize": "Cython",
    "maturin": "maturin",
    "meson": "meson",
    "pybind11-config": "pybind11",
}

#: Ubuntu's names (which CI workflows use) for packages Debian names otherwise.
UBUNTU_NAMES: Mapping[str, str] = {
    "libmysqlclient-dev": "default-libmysqlclient-dev",
    "libmariadbclient-dev": "libmariadb-dev",
    "libjpeg8-dev": "libjpeg-dev",
    "libjpeg-turbo8-dev": "libjpeg-dev",
    "libtiff5-dev": "libtiff-dev",
    "libpng12-dev": "libpng-dev",
    "libncurses5-dev": "libncurses-dev",
    "libncursesw5-dev": "libncurses-dev",
    "libreadline6-dev": "libreadline-dev",
    "libssl1.0-dev": "libssl-dev",
    "libfreetype6-dev": "libfreetype-dev",
    "libldap2-dev": "libldap-dev",
    "libgeos++-dev": "libgeos-dev",
}

#: A Debian package name as apt accepts it (no options, versions or globs).
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]+")


def package_for_header(header: str) -> str | None:
    """The Debian package shipping ``header`` (as an ``#include`` names it), or None when unknown."""
    return _lookup(HEADERS, header)


def pip_for_header(header: str) -> str | None:
    """The PyPI distribution whose headers these are (``numpy/arrayobject.h`` is numpy's), or None."""
    return _lookup(PIP_HEADERS, header)


def package_for_library(name: str) -> str | None:
    """The Debian package with the development files of library ``name`` (``-lname``), or None."""
    return LIBRARIES.get(name)


def package_for_pkg_config(module: str) -> str | None:
    """The Debian package providing pkg-config module ``module``, or None."""
    return PKG_CONFIG.get(module)


def package_for_tool(tool: str) -> str | None:
    """The Debian package(s), space-separated, providing executable ``tool``, or None."""
    return TOOLS.get(tool.rsplit("/", 1)[-1])


def debian_name(package: str) -> str:
    """``package`` as Debian names it (a CI workflow's Ubuntu name translated; others unchanged)."""
    return UBUNTU_NAMES.get(package, package)


def is_package_name(word: str) -> bool:
    """Whether ``word`` is spelled like a Debian package name (not an option, version or glob)."""
    return _PACKAGE_NAME.fullmatch(word) is not None


def _lookup(table: Mapping[str, str], header: str) -> str | None:
    header = header.strip().strip("<>\"'").removeprefix("./")
    if header in table:
        return table[header]
    # The longest directory key that contains the header: "libxml2/libxml/parser.h" → "libxml/".
    parts = header.split("/")
    for start in range(len(parts) - 1):
        for end in range(len(parts) - 1, start, -1):
            key = "/".join(parts[start:end]) + "/"
            if key in table:
                return table[key]
    return None
