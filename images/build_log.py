"""The log of one image build: one file per build, sections headed by ``==>``."""

from __future__ import annotations

import re
from pathlib import Path


class BuildLog:
    """The build log: one file per build, sections headed by ``==>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def section(self, title: str, *lines: str) -> None:
        with self.path.open("a") as stream:
            stream.write(f"==> {title}\n")
            for line in lines:
                stream.write(line if line.endswith("\n") else line + "\n")

    def size(self) -> int:
        return self.path.stat().st_size

    def since(self, mark: int) -> str:
        with self.path.open("rb") as stream:
            stream.seek(mark)
            return stream.read().decode(errors="replace")

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def last_error(self, mark: int) -> str:
        lines = [line.strip() for line in self.since(mark).splitlines() if line.strip()]
        errors = [line for line in lines if re.search(r"error|failed|exception", line, re.IGNORECASE)]
        return (errors or lines or ["no output"])[-1][:300]
