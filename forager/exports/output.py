"""Where an export is written: a temporary name beside the target, renamed over it only when complete.

A crash, a full disk or Ctrl-C never leaves half an export under the final name, and a missing parent
folder is created. Every operating-system failure becomes one :class:`ExportError` that names the path
and says what to do.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from core.errors import ForagerError


class ExportError(ForagerError):
    """An export cannot be written: the path is unusable, the disk is full, or the input is refused."""


@contextmanager
def staged(target: Path, *, directory: bool) -> Iterator[Path]:
    """A temporary file (or folder, when ``directory``) beside ``target``, renamed to it on success.

    An existing file is replaced; an existing folder only when it is empty, so that an export never
    deletes files it did not write. On any failure the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    with os_errors(target):
        if target.is_dir() and (not directory or any(target.iterdir())):
            raise ExportError(
                f"{target} is a folder that is not empty: "
                + ("choose a new folder" if directory else "give a file name")
            )
        if directory and target.exists() and not target.is_dir():
            raise ExportError(f"{target} is a file: this format writes a folder, give a folder name")
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{target.name}."
        if directory:
            temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=".tmp"))
        else:
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
            os.close(handle)
            temporary = Path(name)
    try:
        with os_errors(target):
            yield temporary
            if directory:
                temporary.chmod(0o755)  # mkdtemp makes it private; an export is meant to be shared
                if target.is_dir():
                    target.rmdir()
            else:
                temporary.chmod(0o644)
            os.replace(temporary, target)
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        raise


@contextmanager
def os_errors(target: Path) -> Iterator[None]:
    """Turn an operating-system failure while writing ``target`` into one clear :class:`ExportError`."""
    try:
        yield
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {_advice(exc)}") from exc


def _advice(exc: OSError) -> str:
    # The errno's own words: pyarrow's strerror wraps them in a message of its own.
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{reason}; free some space or write elsewhere (nothing was left under that name)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason}; choose a path you may write to"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{reason}; a part of the path is a file, not a folder"
    return reason


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_bytes(obj: Any, indent: int | None = None) -> bytes:
    """``obj`` as JSON in valid UTF-8: a lone surrogate (an undecodable byte of tool output, kept by the
    store) becomes U+FFFD, which every JSON reader accepts."""
    text = json.dumps(obj, ensure_ascii=False, default=str, indent=indent)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


class JsonLinesWriter:
    """The base of the formats that write one JSON object per line to one UTF-8 file."""

    directory: ClassVar[bool] = False

    def __init__(self, path: Path) -> None:
        self._out = path.open("wb")
        self.rows = 0

    def line(self, obj: dict[str, Any]) -> None:
        self._out.write(json_bytes(obj) + b"\n")

    def close(self, summary: object) -> None:
        self._out.close()
