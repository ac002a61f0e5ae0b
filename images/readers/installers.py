"""Installer arguments as tox ``deps``, nox ``session.install`` and CI ``pip install`` lines write them."""

from __future__ import annotations

import re
import shlex

from images.readers.collector import Found
from images.readers.common import requirement_key

#: Installers and CI tooling that CI commands install but the tests do not import.
_TOOLING = frozenset(
    {
        "pip",
        "setuptools",
        "wheel",
        "tox",
        "nox",
        "build",
        "twine",
        "codecov",
        "coveralls",
        "python-coveralls",
        "pre-commit",
        "uv",
        "pipx",
        "poetry",
        "hatch",
        "pdm",
        "flit",
        "virtualenv",
        "pip-tools",
    }
)
#: pip options whose value is the next argument (and is not a requirement).
_PIP_OPTIONS_WITH_VALUE = frozenset(
    {
        "-c",
        "--constraint",
        "-i",
        "--index-url",
        "--extra-index-url",
        "--index",
        "--default-index",
        "-f",
        "--find-links",
        "-t",
        "--target",
        "--prefix",
        "--root",
        "-p",
        "--python",
        "--platform",
        "--python-platform",
        "--python-version",
        "--implementation",
        "--abi",
        "--only-binary",
        "--no-binary",
        "-C",
        "--config-settings",
        "--global-option",
        "--install-option",
        "--trusted-host",
        "--cache-dir",
        "--progress-bar",
        "--upgrade-strategy",
        "--src",
        "--log",
        "--timeout",
        "--retries",
        "--proxy",
        "--cert",
        "--client-cert",
        "--exists-action",
        "--report",
        "--root-user-action",
        "--index-strategy",
        "--resolution",
        "--prerelease",
        "--extra",
        "--group",
        "--override",
        "--exclude-newer",
        "--link-mode",
        "--keyring-provider",
    }
)


_SELF_RE = re.compile(r"\./?(?:\[(?P<extras>[^\]]*)\])?")

_GHA_EXPRESSION_RE = re.compile(r"\$\{\{.*?\}\}")
SHELL_COMMENT_RE = re.compile(r"(?:^|\s)#.*$")


def classify_target(text: str, found: Found, *, tooling: bool) -> None:
    """Sort one requirement-like installer argument into ``found``.

    With ``tooling``, installers and CI helpers (pip, tox, codecov, ...) are skipped as well.
    """
    text = text.strip()
    if not text:
        return
    if "$" in text or "{" in text:
        found.skipped.append(f"{text} (substitution)")
        return
    self_match = _SELF_RE.fullmatch(text)
    if self_match:
        found.extras.extend(e for e in (self_match["extras"] or "").split(",") if e.strip())
        return
    key = requirement_key(text)
    if key is None:
        found.skipped.append(f"{text} (not a requirement specifier)")
    elif tooling and (key[0] in _TOOLING or key[0].startswith("tox-")):
        found.skipped.append(f"{text} (tooling)")
    else:
        found.packages.append(text)


def pip_arguments(tokens: list[str], found: Found, *, tooling: bool = True) -> None:
    """Sort the arguments of one ``pip install`` (or nox ``session.install``) into ``found``."""
    it = iter(tokens)
    for token in it:
        if token in ("-r", "--requirement", "--requirements"):
            value = next(it, None)
            if value is not None:
                _requirement_argument(value, found)
        elif token.startswith(("--requirement=", "--requirements=")):
            _requirement_argument(token.split("=", 1)[1], found)
        elif token.startswith("-r") and not token.startswith("--"):
            _requirement_argument(token[2:], found)
        elif token in ("-e", "--editable"):
            value = next(it, None)
            if value is not None:
                classify_target(value, found, tooling=tooling)
        elif token.startswith("--editable="):
            classify_target(token.split("=", 1)[1], found, tooling=tooling)
        elif token.startswith("-e") and not token.startswith("--"):
            classify_target(token[2:], found, tooling=tooling)
        elif token in _PIP_OPTIONS_WITH_VALUE:
            next(it, None)
        elif not token.startswith("-"):
            classify_target(token, found, tooling=tooling)


def _requirement_argument(value: str, found: Found) -> None:
    value = value.strip().strip("\"'")
    if "$" in value or "{" in value:
        found.skipped.append(f"-r {value} (substitution)")
    else:
        found.requirement_files.append(value)


def shell_words(text: str) -> list[str]:
    """The words of a shell command up to its end (``&&``, ``;``, ``|``, ``)``, comment)."""
    # ``${{ matrix.x }}`` without its spaces stays one word, reported as it was written.
    text = _GHA_EXPRESSION_RE.sub(lambda m: re.sub(r"\s+", "", m[0]), text)
    text = SHELL_COMMENT_RE.sub("", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        words = list(lexer)
    except ValueError:
        # An unbalanced quote, typically YAML quoting around the whole command: drop the quotes.
        words = text.replace('"', " ").replace("'", " ").split()
    for index, word in enumerate(words):
        if word and all(ch in ";&|()" for ch in word):
            return words[:index]
    return words
