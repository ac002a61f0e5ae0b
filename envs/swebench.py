"""SWE-bench task instances as JSON Lines, in and out, and the files a patch touches.

One instance per line, an object with SWE-bench's field names (:data:`FIELDS`). SWE-bench stores
``FAIL_TO_PASS`` and ``PASS_TO_PASS`` as JSON-encoded strings (``"[\\"tests/test_x.py::test_y\\"]"``);
derived datasets often store plain lists. :func:`read_instances` accepts both, :func:`write_instances`
writes the strings, as SWE-bench does. Besides Forager's own :data:`EXTENSIONS`, other fields are
ignored, as SWE-bench's tools ignore those.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from core.errors import ForagerError

#: SWE-bench's fields, in its order.
FIELDS = (
    "repo",
    "instance_id",
    "base_commit",
    "patch",
    "test_patch",
    "problem_statement",
    "hints_text",
    "created_at",
    "version",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "environment_setup_commit",
)
#: Forager's fields, written only when set. ``setup_patch`` turns ``base_commit`` into a mutate-fix
#: task's start (SWE-bench has no such step: its harness would start from the working code);
#: ``image_source`` is what the image was built from (``pypi:NAME==VERSION``, a URL, a path), for
#: repositories that ``repo`` alone does not locate. ``image``, ``eval_script``, ``log_parser`` and
#: ``eval_type`` are what SWE-bench 5's ``make_test_spec`` reads to evaluate an instance in a ready
#: image (see :func:`eval_script`).
EXTENSIONS = ("setup_patch", "image_source", "image", "eval_script", "log_parser", "eval_type")
#: A line without one of these is malformed; the other fields default to "" (or no tests).
REQUIRED = ("repo", "instance_id", "base_commit", "problem_statement", "FAIL_TO_PASS")
_TEST_LISTS = ("FAIL_TO_PASS", "PASS_TO_PASS")


class InstanceError(ForagerError):
    """A SWE-bench JSONL file, or a patch, cannot be read."""


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One SWE-bench task instance; the attributes are SWE-bench's field names."""

    repo: str
    instance_id: str
    base_commit: str
    patch: str = ""
    test_patch: str = ""
    problem_statement: str
    hints_text: str = ""
    created_at: str = ""
    version: str = ""
    FAIL_TO_PASS: tuple[str, ...]
    PASS_TO_PASS: tuple[str, ...] = ()
    environment_setup_commit: str = ""
    setup_patch: str = ""
    image_source: str = ""
    image: str = ""
    eval_script: str = ""
    log_parser: str = ""
    eval_type: str = ""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Instance:
        """An instance from one decoded JSONL object.

        A missing or null optional field is "" (``PASS_TO_PASS``: no tests).

        Raises:
            InstanceError: a required field is missing, a text field is not a string, or a test list is
                neither a list of strings nor a JSON string encoding one. The message names the field.
        """
        values: dict[str, Any] = {}
        for name in (*FIELDS, *EXTENSIONS):
            value = record.get(name)
            if value is None:
                if name in REQUIRED:
                    raise InstanceError(f"field {name} is missing")
                continue
            values[name] = _test_list(name, value) if name in _TEST_LISTS else _text(name, value)
        return cls(**values)

    def to_json(self) -> dict[str, str]:
        """The JSONL object, fields in SWE-bench's order, test lists as JSON-encoded strings; then the
        :data:`EXTENSIONS` that are set."""
        record = {name: getattr(self, name) for name in FIELDS}
        record |= {name: value for name in EXTENSIONS if (value := getattr(self, name))}
        for name in _TEST_LISTS:
            record[name] = json.dumps(list(record[name]))
        return record


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InstanceError(f"field {name} must be a string, not {type(value).__name__}")
    return value


def _test_list(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InstanceError(f"field {name} is a string but not a JSON-encoded list: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InstanceError(f"field {name} must be a list of test ids (or a JSON string encoding one)")
    return tuple(value)


def read_instances(path: str | Path) -> list[Instance]:
    """The instances of a SWE-bench JSONL file, in file order; blank lines are skipped.

    Raises:
        InstanceError: the file cannot be read, or a line is not UTF-8, not a JSON object, malformed
            (see :meth:`Instance.from_json`) or repeats an ``instance_id``; the message names the file,
            the line and the field.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InstanceError(f"cannot read SWE-bench instances from {path}: {exc.strerror}") from exc
    instances: list[Instance] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InstanceError(f"{where}: not UTF-8 (byte {exc.start})") from exc
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InstanceError(f"{where}: not valid JSON: {exc.msg} at column {exc.colno}") from exc
        if not isinstance(record, dict):
            raise InstanceError(f"{where}: expected a JSON object, not {type(record).__name__}")
        try:
            instance = Instance.from_json(record)
        except InstanceError as exc:
            raise InstanceError(f"{where}: {exc}") from exc
        if instance.instance_id in seen:
            raise InstanceError(
                f"{where}: instance_id {instance.instance_id} repeats line {seen[instance.instance_id]}"
            )
        seen[instance.instance_id] = number
        instances.append(instance)
    return instances


def write_instances(path: str | Path, instances: Iterable[Instance]) -> None:
    """Write ``instances`` as SWE-bench JSONL (UTF-8), replacing ``path`` only once all is written."""
    write_records(path, (instance.to_json() for instance in instances))


def write_records(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write ``records`` as JSON Lines (UTF-8), replacing ``path`` only once all is written; a missing
    folder is created.

    Raises:
        InstanceError: the file cannot be written (the message names it and says why); nothing is left
            under its name.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file beside the target, renamed over it: a crash never leaves half a dataset.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InstanceError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InstanceError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


#: SWE-bench's markers around the test output its log parsers read.
_START, _END = ">>>>> Start Test Output", ">>>>> End Test Output"
#: The SWE-bench log parser that reads ``pytest -rA`` output (``PASSED tests/x.py::test_y`` lines).
PYTEST_LOG_PARSER = "parse_log_pytest"


def eval_script(
    *,
    workdir: str,
    pytest_words: Sequence[str],
    test_ids: Sequence[str],
    test_files: Sequence[str],
    test_patch: str = "",
) -> str:
    """The evaluation script SWE-bench's harness runs in the task's image after applying a prediction.

    It does what Forager's grading does: puts ``test_files`` back to the committed version (so that no
    prediction passes by editing the tests), applies ``test_patch``, and runs exactly ``test_ids`` with
    pytest (``pytest_words``: the image's test command without its paths) and ``-rA``, between the
    markers :data:`PYTEST_LOG_PARSER` reads; then restores the test files again. Runs in ``workdir``.

    The harness applies the prediction before this script, in its own working directory (``/testbed``),
    to the image as built: Forager's images hold ``/testbed`` as a link to ``/repo`` (images built before
    it need a rebuild), and a mutate-fix task's ``setup_patch`` has no step to be applied in
    (``--format swesmith`` is the convention for those).
    """
    q = shlex.quote
    restore = [
        f"if git cat-file -e HEAD:{q(path)} 2>/dev/null; then git checkout -q HEAD -- {q(path)}; "
        f"else rm -f -- {q(path)}; fi"
        for path in test_files
    ]
    lines = ["#!/bin/bash", "set -uxo pipefail", f"cd {q(workdir)}", *restore]
    if test_patch:
        delimiter = "EOF_FORAGER_TEST_PATCH"
        lines += [f"git apply --binary - <<'{delimiter}'", test_patch.rstrip("\n"), delimiter]
    lines += [
        f": '{_START}'",
        " ".join([*map(q, pytest_words), "-rA", *map(q, test_ids)]),
        f": '{_END}'",
        *restore,
    ]
    return "\n".join(lines) + "\n"


def swesmith_record(instance: Instance, *, commit: str) -> dict[str, Any]:
    """A mutate-fix task in SWE-smith's convention: ``patch`` introduces the bug into the image's checkout
    (Forager's ``setup_patch``), ``repo`` is the mirror's ``owner__name.COMMIT8``, ``image_name`` the
    image, and the test lists are plain lists."""
    mirror = instance.repo.replace("/", "__")
    return {
        "instance_id": instance.instance_id,
        "repo": f"{mirror}.{commit[:8]}" if commit else mirror,
        "patch": instance.setup_patch,
        "FAIL_TO_PASS": list(instance.FAIL_TO_PASS),
        "PASS_TO_PASS": list(instance.PASS_TO_PASS),
        "created_at": instance.created_at,
        "image_name": instance.image,
        "base_commit": instance.base_commit,
        "problem_statement": instance.problem_statement,
    }


_HOSTED = re.compile(r"^(?:https?://|ssh://|git@)[^/:]+[/:]([\w.-]+)/([\w.-]+?)(?:\.git)?/?(?:@.*)?$")


def repo_name(source: str, name: str, meta: Mapping[str, Any] | None = None) -> str:
    """The ``owner/name`` of a repository, as SWE-bench's ``repo`` field holds it, whenever there is one.

    In order: the ``repo`` a task was imported with (``meta``), the owner and name in a hosted git
    URL (``https://github.com/o/r.git``, ``git@host:o/r``), else ``name`` as stored (a PyPI package or
    local path has no owner), with the ``owner__name`` spelling of image tags turned back into
    ``owner/name``.
    """
    if meta and meta.get("repo"):
        return str(meta["repo"])
    if match := _HOSTED.match(source.strip()):
        return f"{match[1]}/{match[2]}"
    return name.replace("__", "/", 1)


def files_touched(patch: str) -> list[str]:
    """Repository paths a unified diff changes, adds, deletes or renames (both names), in diff order.

    Paths lose their first component (``a/``, ``b/``), as ``git apply`` and ``patch -p1`` strip it;
    names git quoted (``"a/caf\\303\\251.py"``) are unquoted. An empty patch touches nothing.

    Raises:
        InstanceError: the patch is not a unified diff.
    """
    try:
        patched = PatchSet(patch)
    except UnidiffParseError as exc:
        raise InstanceError(f"not a unified diff: {exc}") from exc
    paths: dict[str, None] = {}
    for file in patched:
        for name in (file.source_file, file.target_file):
            if name and name != "/dev/null":
                paths[_strip_component(_unquote(name))] = None
    return list(paths)


_ESCAPES = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13, b'"': 34, b"\\": 92}
_ESCAPE = re.compile(rb'\\([0-7]{3}|[abtnvfr"\\])')


def _unquote(name: str) -> str:
    """A path as git writes it in a diff header: C-quoted (octal UTF-8 bytes) when it has odd characters."""
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    raw = _ESCAPE.sub(_unescape, name[1:-1].encode("utf-8", errors="surrogateescape"))
    return raw.decode("utf-8", errors="surrogateescape")


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match[1]
    return bytes([int(code, 8) if code[:1].isdigit() else _ESCAPES[code]])


def _strip_component(path: str) -> str:
    return path.split("/", 1)[1] if "/" in path else path
