"""Running the real ``forager`` entry point in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def forager(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``forager --home HOME ARGS...``, with none of the caller's FORAGER_* settings leaking in."""
    environ = {k: v for k, v in os.environ.items() if k not in ("FORAGER_DB", "FORAGER_HOME")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "forager", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
