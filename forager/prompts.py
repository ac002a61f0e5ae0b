"""The system and task prompts: editable templates (package data, or files of your own).

Templates use ``string.Template`` placeholders (``${name}``), since problem statements and code are
full of the braces ``str.format`` would trip on. A missing placeholder is an error, not an empty string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from core.errors import ForagerError

#: The line of the task prompt that names the task; policy servers (oracle, replay) find tasks by it.
TASK_ID_LINE = re.compile(r"^Task id: (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Prompts:
    """The two templates an episode starts from."""

    system: str
    task: str

    @classmethod
    def load(cls, system: Path | None = None, task: Path | None = None) -> Prompts:
        """The packaged templates, or the files given instead."""
        packaged = resources.files("forager") / "templates"
        return cls(
            system=system.read_text() if system else (packaged / "system.txt").read_text(),
            task=task.read_text() if task else (packaged / "task.txt").read_text(),
        )

    def render(self, **values: str) -> tuple[str, str]:
        """(system prompt, task prompt) with ``values`` filled in."""
        return _fill(self.system, values, "system"), _fill(self.task, values, "task")


def _fill(template: str, values: dict[str, str], which: str) -> str:
    try:
        return Template(template).substitute(values).strip() + "\n"
    except (KeyError, ValueError) as exc:
        raise ForagerError(
            f"the {which} prompt template has an unknown placeholder {exc}: use ${{name}} with one of "
            f"{', '.join(sorted(values))} (write $$ for a literal $)"
        ) from exc
