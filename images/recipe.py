"""The install recipe: the commands that made a working image, as data, and its Dockerfile form."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

REPO_DIR = "/repo"
VENV_DIR = "/venv"
#: What every repository image's environment says: the project's venv comes first on PATH.
IMAGE_ENV = {
    "VIRTUAL_ENV": VENV_DIR,
    "PATH": f"{VENV_DIR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True)
class RecipeStep:
    """One shell command, run with ``sh -c`` in :data:`REPO_DIR` with the venv active."""

    run: str
    why: str
    """What in the project (or in an error log) called for this step."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables this step alone needs (e.g. a pretend version for setuptools_scm)."""
    required: bool = True
    """Whether the build fails when this step cannot be made to work (optional extras are skipped)."""


@dataclass(frozen=True)
class InstallRecipe:
    """Everything needed to remake an image from its checkout: base, steps, environment, test command."""

    base_image: str
    steps: tuple[RecipeStep, ...]
    test_command: str
    env: dict[str, str] = field(default_factory=lambda: dict(IMAGE_ENV))
    install_env: dict[str, str] = field(default_factory=dict)
    """Variables every install step sees but the image does not keep: ``UV_EXCLUDE_NEWER`` (resolve as
    of the commit's date), ``UV_CONSTRAINT`` (the lock file's pins)."""
    lock_file: str | None = None
    """The project's lock file whose versions the install followed, if any."""
    python: str | None = None
    """The CPython line (``3.13``) the base gives, when Forager chose the base for it."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the form stored with the image and written next to its Dockerfile)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstallRecipe:
        steps = tuple(RecipeStep(**step) for step in data["steps"])
        # Recipes stored before install_env and lock_file existed have neither.
        return cls(
            data["base_image"],
            steps,
            data["test_command"],
            dict(data["env"]),
            dict(data.get("install_env") or {}),
            data.get("lock_file"),
            data.get("python"),
        )

    def digest(self) -> str:
        """A hash of the recipe's content: same recipe, same digest."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def dockerfile(self, source: str, commit: str) -> str:
        """The equivalent Dockerfile. Build it with the checkout of ``commit`` as context."""
        lines = [
            f"# The image Forager built for {source} at {commit}.",
            "# Rebuild it by hand from a checkout of that commit (including .git):",
            "#   docker build --network host -f Dockerfile CHECKOUT",
            "# Behind a TLS-intercepting proxy, add its CA to the base image or set PIP_CERT/SSL_CERT_FILE.",
            *([f"# CPython {self.python}, the base's own python3"] if self.python else []),
            f"FROM {self.base_image}",
            f"COPY . {REPO_DIR}",
            f"WORKDIR {REPO_DIR}",
            "ENV " + " ".join(f"{key}={_quote(value)}" for key, value in self.env.items()),
        ]
        if self.lock_file:
            lines.append(f"# Versions pinned by the project's {self.lock_file}")
        # ARG, not ENV: the install steps see these, the image does not keep them.
        lines += [f"ARG {key}={_quote(value)}" for key, value in self.install_env.items()]
        for step in self.steps:
            # A step's why can quote a repository's text (a workflow step's name): one comment line.
            lines.append(f"# {_one_line(step.why)}")
            prefix = " ".join(f"{key}={shlex.quote(value)}" for key, value in step.env.items())
            lines.append(f"RUN {prefix + ' ' if prefix else ''}{step.run}")
        lines.append("# SWE-bench's harness applies predictions in /testbed")
        lines.append(f"RUN ln -sfn {REPO_DIR} /testbed")
        lines.append(f"# Tests: {_one_line(self.test_command)}")
        lines.append('CMD ["bash"]')
        return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quote(value: str) -> str:
    return value if value and all(c.isalnum() or c in "/._-:=+,@" for c in value) else json.dumps(value)
