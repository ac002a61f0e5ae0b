"""CI configuration: the ``pip install`` commands of the jobs that run the tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath

import yaml

from images.readers.collector import Collector, Found
from images.readers.common import EXCLUDED_WORDS, name_words, without_version
from images.readers.installers import pip_arguments, shell_words

#: CI jobs and workflow files so named build or publish things rather than run the tests.
CI_EXCLUDED_WORDS = EXCLUDED_WORDS | {"pages", "wheel", "wheels", "sdist", "codeql", "stale", "labeler"}

#: ``pip install`` as written in shell (``pip3 install``, ``python -m pip install``, ``uv pip install``).
_PIP_INSTALL_RE = re.compile(r"(?<![\w.-])pip[\d.]*\s+install(?![\w-])")
#: Words in a CI job that show it runs the tests (``pytest``, ``tox -e py``, ``make test``, ``make ci``).
RUNS_TESTS_RE = re.compile(
    r"\b(?:py\.?test|tox|nox|unittest|tests?|testing|trial|coverage|ci)\b", re.IGNORECASE
)


def _ci_jobs(c: Collector, rel: str, text: str) -> list[tuple[str | None, str]]:
    """A CI file as (job id, the job's text) pairs: every key and string under each of the ``jobs:``;
    (None, the whole text) for a file without jobs (Travis) or one that is not valid YAML."""
    try:
        # BaseLoader: every scalar stays a string, as written ("3.10" is not the float 3.1).
        doc = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        c.note(f"{rel}: malformed YAML ({str(exc).splitlines()[0]}), read as plain text")
        return [(None, text)]
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    if not isinstance(jobs, dict):
        return [(None, text)]
    return [(str(name), "\n".join(_strings(job))) for name, job in jobs.items()]


def _strings(node: object) -> Iterator[str]:
    """The keys and string values of a parsed YAML node, depth first, in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _pip_installs(text: str) -> Found:
    """What the ``pip install`` commands in a CI script ask for (``run: |`` blocks included)."""
    found = Found()
    # Backslash continuations join lines the way the shell would.
    text = re.sub(r"\\[ \t]*\r?\n\s*", " ", text)
    for line in text.splitlines():
        # Each command's words end at its shell separator, so commands chained with && all count.
        for match in _PIP_INSTALL_RE.finditer(line):
            pip_arguments(shell_words(line[match.end() :]), found)
    return found


def ci_files(c: Collector) -> list[str]:
    """GitHub workflows; without any, the older CI configurations (Travis, GitLab, CircleCI)."""
    workflows = c.root / ".github" / "workflows"
    if workflows.is_dir():
        found = sorted(
            p.relative_to(c.root).as_posix()
            for p in workflows.iterdir()
            if p.suffix in (".yml", ".yaml") and p.is_file()
        )
        if found:
            return found
    # Older CI files of repositories that moved to GitHub Actions often pin long-gone versions: they
    # count only when there is no workflow.
    older = (".travis.yml", ".gitlab-ci.yml", ".circleci/config.yml")
    return [rel for rel in older if (c.root / rel).is_file()]


def read(c: Collector) -> None:
    declined = []
    testless = []
    for rel in ci_files(c):
        if name_words(PurePosixPath(rel).stem) & CI_EXCLUDED_WORDS:
            declined.append(rel)
            continue
        text = c.text(rel)
        if text is None:
            continue
        main_job_seen = False
        for job, body in _ci_jobs(c, rel, text):
            label = f"{rel} job {job}" if job else rel
            if job is not None and name_words(job) & CI_EXCLUDED_WORDS:
                declined.append(label)
                continue
            # Jobs that run no tests (spell checks, issue bots) install nothing the tests need.
            if not RUNS_TESTS_RE.search(body):
                testless.append(label)
                continue
            found = _pip_installs(body)
            where = f"{label} pip install"
            if main_job_seen:
                # Later jobs are mostly variants of the first (oldest versions, "urllib3 1.x"): what
                # they install counts, the versions they pin for their variant do not.
                loose = [without_version(spec) for spec in found.packages]
                if loose != found.packages:
                    found.packages = loose
                    where += ", version constraints dropped (a variant of an earlier job)"
            main_job_seen = True
            if found.packages or found.requirement_files or found.extras or found.skipped:
                c.apply(found, where)
    if declined:
        c.note(f"CI {', '.join(declined)} not read (docs, lint or publishing)")
    if testless:
        c.note(f"CI {', '.join(testless)} not read (runs no tests)")
