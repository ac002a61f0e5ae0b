"""The Kubernetes backend's runtime: one pod, and one persistent bash in it over one exec websocket.

The shell protocol, timeouts, output caps and restarts are ``envs.shell``'s, as for Docker; this module
supplies the stream (the exec websocket of ``kubernetes.stream``, read frame by frame so that memory
stays bounded however much a command prints), the one-shot execs that kill a timed-out command, and
files through the shell itself (base64 over the same stream: no ``kubectl cp``, no tar in the image).

A websocket that drops (an API server restart, an idle connection cut) is replaced by a new shell in
the same directory while the pod lives, and the observation says so; once the pod is gone every call
raises ``EnvironmentDied``. Every read and write on the socket has a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import posixpath
import secrets
import select
import shlex
import ssl
import time
from typing import TYPE_CHECKING

import urllib3
from kubernetes.client.rest import ApiException
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDIN_CHANNEL, STDOUT_CHANNEL, WSClient
from websocket import ABNF, WebSocketException

from envs.backend import Limits
from envs.runtime import EnvironmentDied
from envs.shell import SHELL_COMMAND, ShellGone, ShellRuntime

if TYPE_CHECKING:
    from envs.kubernetes_backend import KubernetesBackend

#: How often to look (0.2 s apart) whether a pod whose stream broke is going away.
_STATE_CHECKS = 5
#: Seconds a one-shot exec (killing a timed-out command) may take.
_EXEC_DEADLINE = 15.0
#: Most bytes of output that arrived between commands held before the stream is judged open.
_EARLY_BYTES = 2**20
#: Most bytes a file read may have (its base64 travels as one command's output).
_MAX_FILE = 192 * 2**20


class KubernetesRuntime(ShellRuntime):
    """One episode environment in a pod; made by ``KubernetesBackend.start``. Close it (or ``with``)."""

    def __init__(self, backend: KubernetesBackend, pod: str, workdir: str, limits: Limits) -> None:
        super().__init__(workdir, limits)
        self.backend = backend
        self.pod = pod

    def open(self) -> None:
        """Start the shell (the pod runs)."""
        self._shell = self._open_shell(self._workdir)

    # -- the protocol -----------------------------------------------------------------------------

    def read_file(self, path: str) -> bytes:
        path = self._absolute(path)
        quoted = shlex.quote(path)
        script = f"(if [ -d {quoted} ]; then exit 21; fi; [ -e {quoted} ] || exit 2; base64 -w 0 {quoted})"
        done = self._run(script, self.limits.timeout, _MAX_FILE * 4 // 3 + 4096)
        if done.exit_code == 2:
            raise FileNotFoundError(path)
        if done.exit_code == 21:
            raise IsADirectoryError(path)
        if done.exit_code != 0 or done.elided:
            raise OSError(
                f"cannot read {path}: {done.output[-300:] if done.exit_code else 'it is too large'}"
            )
        return base64.b64decode(done.output)

    def write_file(self, path: str, content: bytes) -> None:
        path = self._absolute(path)
        delimiter = f"FORAGER_DATA_{secrets.token_hex(8)}"
        encoded = base64.encodebytes(content).decode()
        # Writing through `>` keeps an existing file's mode: an edited script stays executable.
        script = (
            f"mkdir -p -- {shlex.quote(posixpath.dirname(path))} && "
            f"base64 -d > {shlex.quote(path)} <<'{delimiter}'\n{encoded}{delimiter}"
        )
        done = self._run(script, self.limits.timeout, 4096)
        if done.exit_code != 0:
            raise OSError(f"cannot write {path}: {done.output.strip()}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shell is not None:
            self._shell.close()
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
            self.backend.delete_pod(self.pod)

    def __enter__(self) -> KubernetesRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what envs.shell needs ------------------------------------------------------------------

    def _connect(self, cwd: str) -> _WebSocketChannel:
        try:
            return _WebSocketChannel(self.backend.exec_stream(self.pod, SHELL_COMMAND, stdin=True))
        except (ApiException, TimeoutError) as exc:
            raise ShellGone(f"no shell could be started: {exc}") from exc

    def _exec(self, script: str) -> None:
        try:
            ws = self.backend.exec_stream(self.pod, ["sh", "-c", script], stdin=False)
        except (ApiException, TimeoutError) as exc:
            died = self._died(exc)
            if isinstance(died, EnvironmentDied):
                raise died from exc
            raise EnvironmentDied(f"no command can be run in pod {self.pod}: {exc}") from exc
        channel = _WebSocketChannel(ws)
        deadline = time.monotonic() + _EXEC_DEADLINE
        try:
            while (remaining := deadline - time.monotonic()) > 0 and channel.read(remaining) != b"":
                pass
        finally:
            channel.close()

    def _died(self, cause: Exception) -> Exception:
        # A pod being deleted can still answer for a moment after its streams end.
        for attempt in range(_STATE_CHECKS):
            try:
                pod = self.backend.call(
                    self.backend.core.read_namespaced_pod, self.pod, self.backend.namespace
                )
            except ApiException as exc:
                if exc.status == 404:
                    return EnvironmentDied(f"the environment's pod {self.pod} is gone")
                return EnvironmentDied(f"the Kubernetes API stopped answering about pod {self.pod}: {exc}")
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                return EnvironmentDied(f"the Kubernetes API stopped answering about pod {self.pod}: {exc}")
            status = pod.status
            if pod.metadata.deletion_timestamp is not None:
                return EnvironmentDied(f"the environment's pod {self.pod} is being deleted")
            if status is not None and status.phase in ("Failed", "Succeeded"):
                reason = status.reason or _terminated(pod) or status.phase
                return EnvironmentDied(f"the environment's pod {self.pod} stopped ({reason})")
            if attempt < _STATE_CHECKS - 1:
                time.sleep(0.2)
        return cause


def _terminated(pod: object) -> str:
    for container in pod.status.container_statuses or []:  # type: ignore[attr-defined]
        ended = container.state.terminated if container.state else None
        if ended is not None:
            return "it ran out of memory" if ended.reason == "OOMKilled" else f"exit code {ended.exit_code}"
    return ""


class _WebSocketChannel:
    """An exec websocket as a shell channel: stdin out on channel 0, stdout and stderr in, merged.

    Frames are read one at a time straight from the websocket (``WSClient.update`` would buffer all
    that is available, without bound, before returning). The error channel's ``Status`` marks the
    process's end; a close without it means the connection, not the shell, was lost.
    """

    def __init__(self, client: WSClient) -> None:
        self.client = client
        self.ws = client.sock
        self._early = bytearray()
        self._ended = False
        self._status: dict | None = None

    def send(self, data: bytes) -> None:
        if self._ended:
            raise ShellGone(self.gone_reason())
        try:
            self.ws.send(bytes([STDIN_CHANNEL]) + data, opcode=ABNF.OPCODE_BINARY)
        except (WebSocketException, OSError) as exc:
            self._ended = True
            raise ShellGone(self.gone_reason()) from exc

    def read(self, timeout: float) -> bytes | None:
        if self._early:
            early = bytes(self._early)
            self._early.clear()
            return early
        if self._ended:
            return b""
        if not self._readable(timeout):
            return None
        return self._frame()

    def is_open(self) -> bool:
        # What waits is output of a background process (kept for the next command, up to a bound: a
        # process that floods is not read to its end here), or the stream's end.
        while not self._ended and len(self._early) < _EARLY_BYTES and self._readable(0):
            self._early += self._frame() or b""
        return not self._ended

    def gone_reason(self) -> str:
        if self._status is None:
            return "the connection to the shell was lost"
        return "the shell exited"

    def close(self) -> None:
        self._ended = True
        with contextlib.suppress(WebSocketException, OSError):
            self.client.close()

    def _readable(self, timeout: float) -> bool:
        sock = self.ws.sock
        if sock is None:
            return True  # closed under us: reading says so
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes wait in the TLS layer, invisible to poll
        poll = select.poll()
        poll.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poll.poll(max(0, math.ceil(timeout * 1000))))

    def _frame(self) -> bytes | None:
        """The output in the next frame (None if it holds none); b"" once the stream ended."""
        try:
            opcode, frame = self.ws.recv_data_frame(True)
        except (WebSocketException, OSError):
            self._ended = True
            return b""
        if opcode == ABNF.OPCODE_CLOSE:
            self._ended = True
            return b""
        if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or not frame.data:
            return None
        data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
        channel, payload = data[0], data[1:]
        if channel in (STDOUT_CHANNEL, STDERR_CHANNEL):
            return payload or None
        if channel == ERROR_CHANNEL:
            with contextlib.suppress(ValueError):
                self._status = json.loads(payload or b"{}")
        return None
