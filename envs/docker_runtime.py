"""The Docker backend of the runtime protocol: a locked-down container and one persistent bash in it.

Every command goes over a single ``docker exec`` stream that stays open for the whole episode: a round
trip costs a write and a read on a local socket (well under a millisecond) instead of a new exec
(about 80 ms). The shell protocol, timeouts, output caps and restarts are ``envs.shell``'s; this module
supplies the container, the stream, and files through the engine's archive API.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import secrets
import select
import shlex
import socket
import struct
import tarfile
import time
from datetime import UTC, datetime

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from core.errors import ForagerError
from envs.backend import CAPABILITIES, EPISODE_LABEL, Limits, lifetime_seconds
from envs.runtime import EnvironmentDied
from envs.shell import SHELL_COMMAND, ShellGone, ShellRuntime
from images.engine import owner_labels

#: How often to look (0.2 s apart) whether a container whose stream broke has stopped.
_STATE_CHECKS = 5


class DockerRuntime(ShellRuntime):
    """One episode environment in a Docker container. Use :meth:`start`, and close it (or ``with``)."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: docker.models.containers.Container,
        workdir: str,
        limits: Limits,
    ) -> None:
        super().__init__(workdir, limits)
        self.client = client
        self.container = container

    @classmethod
    def start(
        cls,
        client: docker.DockerClient,
        image: str,
        *,
        episode: str | None = None,
        workdir: str = "/repo",
        limits: Limits | None = None,
        lifetime: float | None = None,
    ) -> DockerRuntime:
        """Start a container from ``image`` (no network, limits, labelled) with a shell in ``workdir``.

        The container's main process ends after ``lifetime`` seconds (see ``envs.backend``), so a
        container whose owner was killed before it could remove it stops by itself, as a pod does at its
        ``activeDeadlineSeconds``.
        """
        limits = limits or Limits()
        labels = {
            **owner_labels(),
            EPISODE_LABEL: episode or secrets.token_hex(8),
            "forager.created": datetime.now(UTC).isoformat(),
        }
        try:
            # create, not run: run would try to pull an image it does not find, from a registry.
            container = client.containers.create(
                image,
                ["sleep", str(lifetime_seconds(lifetime))],
                init=True,
                network_mode="none",
                working_dir=workdir,
                labels=labels,
                mem_limit=limits.memory,
                memswap_limit=limits.memory,
                nano_cpus=int(limits.cpus * 1e9),
                pids_limit=limits.pids,
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                cap_add=CAPABILITIES,
            )
        except ImageNotFound as exc:
            raise ForagerError(f"image {image} does not exist: build it with `forager images build`") from exc
        except DockerException as exc:
            raise EnvironmentDied(f"could not start an environment from {image}: {exc}") from exc
        runtime = cls(client, container, workdir, limits)
        try:
            try:
                container.start()
            except DockerException as exc:
                raise EnvironmentDied(f"could not start an environment from {image}: {exc}") from exc
            runtime._shell = runtime._open_shell(workdir)
        except BaseException:
            runtime.close()
            raise
        return runtime

    # -- the protocol ---------------------------------------------------------------------------------

    def read_file(self, path: str) -> bytes:
        path = self._absolute(path)
        try:
            stream, stat = self.container.get_archive(path)
        except NotFound as exc:
            raise FileNotFoundError(path) from exc
        except APIError as exc:
            raise self._died(exc) from exc
        if stat["mode"] & (1 << 31):  # Go's os.ModeDir
            raise IsADirectoryError(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member else None
            if extracted is None:
                raise IsADirectoryError(path)
            return extracted.read()

    def write_file(self, path: str, content: bytes) -> None:
        path = self._absolute(path)
        parent, name = posixpath.split(path)
        # The file's mode, if it exists, in the same round trip: an edited script stays executable.
        script = (
            f"mkdir -p -- {shlex.quote(parent)} && {{ stat -c %a -- {shlex.quote(path)} 2>/dev/null || :; }}"
        )
        done = self._run(script, self.limits.timeout, 4096)
        if done.exit_code != 0:
            raise OSError(f"cannot create {parent}: {done.output.strip()}")
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = int(done.output.strip() or "644", 8)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
        try:
            self.container.put_archive(parent, archive.getvalue())
        except APIError as exc:
            raise self._died(exc) from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shell is not None:
            self._shell.close()
        with contextlib.suppress(NotFound, DockerException):
            self.container.remove(force=True)

    def __enter__(self) -> DockerRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what envs.shell needs ------------------------------------------------------------------

    def _connect(self, cwd: str) -> _ExecChannel:
        api = _dedicated_client(self.client.api)
        try:
            exec_id = api.exec_create(self.container.id, SHELL_COMMAND, stdin=True, workdir=cwd)["Id"]
            stream = api.exec_start(exec_id, socket=True)
        except DockerException as exc:
            api.close()
            raise ShellGone(f"no shell could be started: {exc}") from exc
        return _ExecChannel(api, stream)

    def _exec(self, script: str) -> None:
        try:
            self.container.exec_run(["sh", "-c", script])
        except DockerException as exc:
            raise self._died(exc) from exc

    def _died(self, cause: Exception) -> Exception:
        """EnvironmentDied when the container is gone or stopped; otherwise the cause itself."""
        # A container being killed can still be reported running for a moment after its streams end.
        for attempt in range(_STATE_CHECKS):
            try:
                self.container.reload()
                state = self.container.attrs["State"]
            except NotFound:
                return EnvironmentDied(f"the environment's container {self.container.short_id} is gone")
            except DockerException as exc:
                return EnvironmentDied(f"the Docker engine stopped answering: {exc}")
            if not state.get("Running"):
                break
            if attempt < _STATE_CHECKS - 1:
                time.sleep(0.2)
        else:
            return cause
        reason = "it ran out of memory" if state.get("OOMKilled") else f"exit code {state.get('ExitCode')}"
        return EnvironmentDied(f"the environment's container {self.container.short_id} stopped ({reason})")


class _ExecChannel:
    """A shell's ``docker exec`` stream, on a client of its own (see ``_dedicated_client``)."""

    def __init__(self, api: docker.APIClient, stream: object) -> None:
        self.api = api
        self._stream = stream  # holds the HTTP response, which owns the connection
        self.sock: socket.socket = getattr(stream, "_sock", stream)
        self.sock.setblocking(True)
        self._frames = _FrameReader(self.sock)
        self._early = b""

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ShellGone(f"the shell exited ({exc})") from exc

    def read(self, timeout: float) -> bytes | None:
        if self._early:
            early, self._early = self._early, b""
            return early
        return self._frames.read(timeout)

    def is_open(self) -> bool:
        chunk = self._frames.read(0)
        if chunk == b"":
            return False
        self._early += chunk or b""  # output of a background process, for the next command
        return True

    def gone_reason(self) -> str:
        return "the shell exited"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self.api.close()


class _FrameReader:
    """Docker's multiplexed exec stream: 8-byte headers (stream, size), then the payload."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""

    def read(self, timeout: float) -> bytes | None:
        """The payload bytes available within ``timeout`` (None if none came, b"" at the end)."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return None
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            return b""
        if not data:
            return b""
        self.pending += data
        payload = bytearray()
        while len(self.pending) >= 8:
            _, size = struct.unpack(">BxxxL", self.pending[:8])
            if len(self.pending) < 8 + size:
                break
            payload += self.pending[8 : 8 + size]
            self.pending = self.pending[8 + size :]
        return bytes(payload) if payload else None


def _dedicated_client(api: docker.APIClient) -> docker.APIClient:
    """A new API client to the same engine, for one shell's stream.

    The stream is a hijacked HTTP connection held for the whole episode; requests on the shared
    client's pool (an ``exec_run``, a ``get_archive``) were seen to end it, so it gets a pool of its own.
    """
    adapter = api.adapters.get("http+docker://")
    socket_path = getattr(adapter, "socket_path", None)
    base_url = f"unix://{socket_path}" if socket_path else api.base_url
    tls = (
        docker.tls.TLSConfig(client_cert=api.cert, verify=api.verify)
        if base_url.startswith("https")
        else False
    )
    return docker.APIClient(base_url=base_url, version=api.api_version, timeout=api.timeout, tls=tls)
