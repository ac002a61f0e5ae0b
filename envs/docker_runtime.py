"""The Docker backend of the runtime protocol: a locked-down container and one persistent bash in it.

Every command goes over a single ``docker exec`` stream that stays open for the whole episode: a round
trip costs a write and a read on a local socket (well under a millisecond) instead of a new exec
(about 80 ms). The shell reads each command as a here-document and answers with a sentinel line that
carries the exit code and the working directory, so cwd and variables persist between commands.

When a command runs out of time its processes are killed inside the container (every process of the
shell's process group but the shell), and if the shell itself is stuck (a busy builtin loop) a new
shell takes its place in the same directory with the same exported variables; the observation says so.
Output is capped while it is read: memory stays bounded however much a command prints.
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
from envs.backend import EPISODE_LABEL, Limits, lifetime_seconds
from envs.runtime import DiffError, EnvironmentDied, Observation
from images.engine import owner_labels

#: Seconds a timed-out command's shell gets to report back after its processes were killed.
_KILL_GRACE = 2.0
#: How often to look (0.2 s apart) whether a container whose stream broke has stopped.
_STATE_CHECKS = 5
#: Exported variables are saved here after every command, to survive a shell restart.
_ENV_FILE = "/tmp/.forager-env"
#: Linux capabilities an episode keeps: enough for root to own and change its files, nothing more.
_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"]


class DockerRuntime:
    """One episode environment in a Docker container. Use :meth:`start`, and close it (or ``with``)."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: docker.models.containers.Container,
        workdir: str,
        limits: Limits,
    ) -> None:
        self.client = client
        self.container = container
        self.limits = limits
        self._workdir = workdir
        self._cwd = workdir
        self._shell: _Shell | None = None
        self._closed = False

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
                cap_add=_CAPABILITIES,
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

    @property
    def workdir(self) -> str:
        return self._workdir

    def run(self, command: str, timeout: float | None = None) -> Observation:
        return self._run(command, timeout or self.limits.timeout, self.limits.output_bytes)

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

    def exists(self, path: str) -> bool:
        return (
            self._run(f"test -e {shlex.quote(self._absolute(path))}", self.limits.timeout, 4096).exit_code
            == 0
        )

    def diff(self, base: str = "HEAD") -> str:
        # A throwaway index, so new files are included without touching the index the agent sees. It is
        # built from HEAD, without stat data, so every file is compared by content: a copy of the agent's
        # index would trust stat data, and an edit in the same second as the last commit that keeps the
        # file's size looks unchanged (git compares whole seconds, and the copy is no longer "racy").
        index = "/tmp/.forager-index"
        # A subshell, so that neither its `cd` nor its `exit` reaches the agent's shell.
        script = (
            f"(cd {shlex.quote(self._workdir)} && GIT_INDEX_FILE={index} git read-tree HEAD && "
            f"GIT_INDEX_FILE={index} git add -A . >/dev/null && "
            f"GIT_INDEX_FILE={index} git -c core.quotepath=off diff --cached --binary {shlex.quote(base)}; "
            f"status=$?; rm -f {index}; exit $status)"
        )
        done = self._run(script, self.limits.timeout, 256 * 2**20)
        if done.exit_code != 0 or done.elided:
            raise DiffError(f"git diff against {base} failed in the environment: {done.output[-500:]}")
        return done.output

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

    # -- the shell ------------------------------------------------------------------------------------

    def _run(self, command: str, timeout: float, limit: int) -> Observation:
        if self._closed:
            raise ForagerError("this environment is closed")
        shell = self._shell
        assert shell is not None
        started = time.monotonic()
        note = ""
        try:
            output, elided, status = shell.run(command, timeout, limit)
        except _ShellGone:
            # `exit`, `exec`, or a kill from inside: a new shell in the last known directory.
            shell.close()
            self._shell = self._open_shell(self._cwd)
            return Observation(
                "", None, time.monotonic() - started,
                note=f"the shell exited; a new shell was started in {self._cwd}",
            )  # fmt: skip
        if status is None:  # out of time: kill what the command started, then the shell if need be
            self._kill_children(shell.pid)
            try:
                late_output, late_elided, status = shell.wait(_KILL_GRACE, limit)
                output, elided = output + late_output, elided + late_elided
            except _ShellGone:
                status = None
            if status is None:
                self._kill(shell.pid)
                shell.close()
                self._shell = self._open_shell(self._cwd)
                note = f"the shell did not come back from the timeout and was restarted in {self._cwd}"
            return Observation(
                output, None, time.monotonic() - started, timed_out=True, elided=elided, note=note
            )  # fmt: skip
        code, self._cwd = status
        return Observation(output, code, time.monotonic() - started, elided=elided)

    def _open_shell(self, cwd: str) -> _Shell:
        try:
            return _Shell.open(self.client, self.container, cwd)
        except (DockerException, OSError, _ShellGone) as exc:
            died = self._died(exc)
            if isinstance(died, EnvironmentDied):
                raise died from exc
            raise EnvironmentDied(f"no shell could be started in the environment: {exc}") from exc

    def _kill_children(self, shell_pid: int) -> None:
        # Every process in the shell's process group except the shell: the command and all it started.
        script = f"for p in $(pgrep -g {shell_pid}); do [ $p = {shell_pid} ] || kill -9 $p 2>/dev/null; done"
        self._exec(script)

    def _kill(self, pid: int) -> None:
        self._exec(f"kill -9 {pid}")

    def _exec(self, script: str) -> None:
        try:
            self.container.exec_run(["sh", "-c", script])
        except DockerException as exc:
            raise self._died(exc) from exc

    def _absolute(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self._cwd, path))

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


class _ShellGone(Exception):
    """The shell's stream ended."""


class _Shell:
    """A bash process speaking the sentinel protocol over one exec stream."""

    def __init__(self, api: docker.APIClient, stream: object, sock: socket.socket) -> None:
        self.api = api
        self._stream = stream  # holds the HTTP response, which owns the connection
        self.sock = sock
        self.pid = 0
        self._frames = _FrameReader(sock)

    @classmethod
    def open(
        cls, client: docker.DockerClient, container: docker.models.containers.Container, cwd: str
    ) -> _Shell:
        api = _dedicated_client(client.api)
        # setsid: the shell leads its own process group, which every command it runs joins, so a timeout
        # can kill exactly the command's processes. --wait: setsid forks, and the exec must not end with
        # it (the engine closes an exec's streams once its first process has exited).
        exec_id = api.exec_create(
            container.id, ["setsid", "--wait", "bash", "--noprofile", "--norc"], stdin=True, workdir=cwd
        )["Id"]
        stream = api.exec_start(exec_id, socket=True)
        sock: socket.socket = getattr(stream, "_sock", stream)
        sock.setblocking(True)
        shell = cls(api, stream, sock)
        # Pagers off, and nothing else: the environment must match the one the image's baseline ran in
        # (a TERM=dumb here once made termcolor's tests fail in episodes but pass in the baseline).
        boot = (
            f"cd {shlex.quote(cwd)} 2>/dev/null; test -f {_ENV_FILE} && . {_ENV_FILE} 2>/dev/null; "
            "export PAGER=cat GIT_PAGER=cat; echo $$"
        )
        output, _, status = shell.run(boot, 30.0, 4096)
        if status is None:
            raise _ShellGone("the shell did not start")
        shell.pid = int(output.split()[-1])
        return shell

    def run(self, command: str, timeout: float, limit: int) -> tuple[str, int, tuple[int, str] | None]:
        """Send ``command``; return (output, bytes elided, (exit code, cwd)) or a None status on timeout."""
        nonce = secrets.token_hex(8)
        self._sentinel = f"__FORAGER_{nonce}__".encode()
        # The command arrives as a quoted here-document, so no character in it is special to this
        # wrapper; stdin is /dev/null so interactive programs fail fast instead of waiting for input.
        script = (
            f"IFS= read -r -d '' __forager_command <<'FORAGER_{nonce}'\n{command}\nFORAGER_{nonce}\n"
            '{ eval "$__forager_command"\n} </dev/null 2>&1\n'
            f"__forager_status=$?; export -p > {_ENV_FILE} 2>/dev/null; "
            f"printf '%s %d %s\\n' '__FORAGER_{nonce}__' \"$__forager_status\" \"$PWD\"\n"
        )
        try:
            self.sock.sendall(script.encode("utf-8", errors="surrogateescape"))
        except OSError as exc:
            raise _ShellGone(str(exc)) from exc
        return self.wait(timeout, limit)

    def wait(self, timeout: float, limit: int) -> tuple[str, int, tuple[int, str] | None]:
        """Read until the sentinel line or ``timeout``; see :meth:`run`."""
        buffer = _CappedBuffer(limit, self._sentinel)
        deadline = time.monotonic() + timeout
        while buffer.status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return buffer.text(), buffer.elided, None
            chunk = self._frames.read(remaining)
            if chunk is None:
                continue
            if chunk == b"":
                raise _ShellGone("the shell's stream ended")
            buffer.append(chunk)
        return buffer.text(), buffer.elided, buffer.status

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


class _CappedBuffer:
    """Keeps the first and last ``limit / 2`` bytes of a stream, and finds the sentinel line at its end.

    The last few bytes are held back until it is clear they are not the start of the sentinel, which
    may arrive split across reads.
    """

    def __init__(self, limit: int, sentinel: bytes) -> None:
        self.half = max(1, limit // 2)
        self.sentinel = sentinel
        self.head = bytearray()
        self.tail = bytearray()
        self.elided = 0
        self.pending = bytearray()
        self.status: tuple[int, str] | None = None

    def append(self, data: bytes) -> None:
        self.pending += data
        index = self.pending.find(self.sentinel)
        if index >= 0:
            self._keep(self.pending[:index])
            del self.pending[:index]
            end = self.pending.find(b"\n")
            if end >= 0:
                _, code, cwd = self.pending[:end].decode(errors="replace").split(" ", 2)
                self.status = (int(code), cwd)
                self.pending.clear()
            return
        held = len(self.sentinel) - 1
        if len(self.pending) > held:
            self._keep(self.pending[:-held])
            del self.pending[:-held]

    def _keep(self, data: bytes | bytearray) -> None:
        room = max(0, self.half - len(self.head))
        self.head += data[:room]
        self.tail += data[room:]
        if len(self.tail) > self.half:
            self.elided += len(self.tail) - self.half
            del self.tail[: len(self.tail) - self.half]

    def text(self) -> str:
        """The output so far, decoded (undecodable bytes escaped), with the elision marked."""
        if self.status is None:  # no sentinel is coming: what was held back is output too
            self._keep(self.pending)
            self.pending.clear()
        head = self.head.decode("utf-8", errors="backslashreplace")
        tail = self.tail.decode("utf-8", errors="backslashreplace")
        if not self.elided:
            return head + tail
        return f"{head}\n[... {self.elided} bytes elided ...]\n{tail}"


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
