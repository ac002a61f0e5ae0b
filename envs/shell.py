"""The persistent shell every backend's runtime speaks: one bash process over one byte stream.

The shell reads each command as a here-document and answers with a sentinel line that carries the exit
code and the working directory, so cwd and variables persist between commands and a round trip costs
a write and a read on an open stream. A backend supplies only the stream (a ``Channel``: Docker's
multiplexed exec socket, Kubernetes' exec websocket) and three operations on its environment
(:class:`ShellRuntime`); timeouts, output caps and restarting a lost shell are implemented here once.

When a command runs out of time its processes are killed inside the environment (every process of the
shell's process group but the shell), and if the shell itself is stuck (a busy builtin loop) a new
shell takes its place in the same directory with the same exported variables; the observation says so.
Output is capped while it is read: memory stays bounded however much a command prints.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
import time
from typing import Protocol

from core.errors import ForagerError
from envs.backend import Limits
from envs.runtime import DiffError, EnvironmentDied, Observation

#: Seconds a timed-out command's shell gets to report back after its processes were killed.
KILL_GRACE = 2.0
#: Exported variables are saved here after every command, to survive a shell restart.
ENV_FILE = "/tmp/.forager-env"
#: The shell's command line. setsid: the shell leads its own process group, which every command it runs
#: joins, so a timeout can kill exactly the command's processes. --wait: setsid forks, and the exec must
#: not end with it (an exec's streams close once its first process has exited).
SHELL_COMMAND = ["setsid", "--wait", "bash", "--noprofile", "--norc"]


class ShellGone(Exception):
    """The shell's stream ended (the shell exited, or the connection to it was lost)."""


class Channel(Protocol):
    """The byte stream to one shell's stdin and its (merged) stdout and stderr."""

    def send(self, data: bytes) -> None:
        """Write to the shell's stdin; ``ShellGone`` if the stream has ended."""
        ...

    def read(self, timeout: float) -> bytes | None:
        """Output available within ``timeout`` seconds: None if none came, b"" once the stream ended."""
        ...

    def is_open(self) -> bool:
        """Whether the stream still stands, looking without waiting (output seen meanwhile is kept)."""
        ...

    def gone_reason(self) -> str:
        """Why the stream ended, for the observation: "the shell exited" or "the connection ... was lost"."""
        ...

    def close(self) -> None: ...


class Shell:
    """A bash process speaking the sentinel protocol over a :class:`Channel`."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.pid = 0
        self._buffer = CappedBuffer(1, b"")

    @classmethod
    def open(cls, channel: Channel, cwd: str) -> Shell:
        """Boot the shell behind ``channel`` in ``cwd`` with the variables a previous shell exported."""
        shell = cls(channel)
        # Pagers off, and nothing else: the environment must match the one the image's baseline ran in
        # (a TERM=dumb here once made termcolor's tests fail in episodes but pass in the baseline).
        boot = (
            f"cd {shlex.quote(cwd)} 2>/dev/null; test -f {ENV_FILE} && . {ENV_FILE} 2>/dev/null; "
            "export PAGER=cat GIT_PAGER=cat; echo $$"
        )
        try:
            output, _, status = shell.run(boot, 30.0, 4096)
        except BaseException:
            channel.close()
            raise
        if status is None:
            channel.close()
            raise ShellGone("the shell did not start")
        shell.pid = int(output.split()[-1])
        return shell

    def run(self, command: str, timeout: float, limit: int) -> tuple[str, int, tuple[int, str] | None]:
        """Send ``command``; return (output, bytes elided, (exit code, cwd)) or a None status on timeout."""
        nonce = secrets.token_hex(8)
        self._buffer = CappedBuffer(limit, f"__FORAGER_{nonce}__".encode())
        # The command arrives as a quoted here-document, so no character in it is special to this
        # wrapper; stdin is /dev/null so interactive programs fail fast instead of waiting for input.
        script = (
            f"IFS= read -r -d '' __forager_command <<'FORAGER_{nonce}'\n{command}\nFORAGER_{nonce}\n"
            '{ eval "$__forager_command"\n} </dev/null 2>&1\n'
            f"__forager_status=$?; export -p > {ENV_FILE} 2>/dev/null; "
            f"printf '%s %d %s\\n' '__FORAGER_{nonce}__' \"$__forager_status\" \"$PWD\"\n"
        )
        self.channel.send(script.encode("utf-8", errors="surrogateescape"))
        return self.wait(timeout)

    def wait(self, timeout: float) -> tuple[str, int, tuple[int, str] | None]:
        """Read on until the sentinel line or ``timeout``; all of the command's output so far, capped
        once (see :meth:`run`)."""
        buffer = self._buffer
        deadline = time.monotonic() + timeout
        while buffer.status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return buffer.text(), buffer.elided, None
            chunk = self.channel.read(remaining)
            if chunk is None:
                continue
            if chunk == b"":
                raise ShellGone(self.channel.gone_reason())
            buffer.append(chunk)
        return buffer.text(), buffer.elided, buffer.status

    def close(self) -> None:
        self.channel.close()


class CappedBuffer:
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
        self.head, self.tail, self.elided = _kept(self.head, self.tail, self.elided, self.half, data)

    def text(self) -> str:
        """The output so far, decoded (undecodable bytes escaped), with the elision marked."""
        head, tail, elided = self.head, self.tail, self.elided
        if self.status is None:  # if no sentinel comes, what is held back is output too
            head, tail, elided = _kept(bytearray(head), bytearray(tail), elided, self.half, self.pending)
        text = head.decode("utf-8", errors="backslashreplace")
        if elided:
            text += f"\n[... {elided} bytes elided ...]\n"
        return text + tail.decode("utf-8", errors="backslashreplace")


def _kept(
    head: bytearray, tail: bytearray, elided: int, half: int, data: bytes | bytearray
) -> tuple[bytearray, bytearray, int]:
    """``head`` and ``tail`` (each at most ``half`` bytes) with ``data`` appended, and the bytes elided."""
    room = max(0, half - len(head))
    head += data[:room]
    tail += data[room:]
    if len(tail) > half:
        elided += len(tail) - half
        del tail[: len(tail) - half]
    return head, tail, elided


class ShellRuntime:
    """What every runtime does through its persistent shell: commands, timeouts, restarts, ``diff``.

    A backend's runtime subclasses it and supplies :meth:`_connect` (a channel to a new shell),
    :meth:`_exec` (a one-shot command beside the shell, to kill what a timed-out command left) and
    :meth:`_died` (whether a failure means the environment itself is gone).
    """

    def __init__(self, workdir: str, limits: Limits) -> None:
        self.limits = limits
        self._workdir = workdir
        self._cwd = workdir
        self._shell: Shell | None = None
        self._closed = False

    # -- what a backend supplies ------------------------------------------------------------------

    def _connect(self, cwd: str) -> Channel:
        """A channel to a new shell (``SHELL_COMMAND``) in ``cwd``; ``ShellGone`` or ``OSError`` if none."""
        raise NotImplementedError

    def _exec(self, script: str) -> None:
        """Run ``sh -c script`` beside the shell and wait for it (raises what :meth:`_died` gives)."""
        raise NotImplementedError

    def _died(self, cause: Exception) -> Exception:
        """EnvironmentDied when the environment is gone or stopped; otherwise ``cause`` itself."""
        raise NotImplementedError

    # -- the protocol -----------------------------------------------------------------------------

    @property
    def workdir(self) -> str:
        return self._workdir

    def run(self, command: str, timeout: float | None = None) -> Observation:
        return self._run(command, timeout or self.limits.timeout, self.limits.output_bytes)

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

    # -- the shell --------------------------------------------------------------------------------

    def _run(self, command: str, timeout: float, limit: int) -> Observation:
        if self._closed:
            raise ForagerError("this environment is closed")
        shell = self._shell
        assert shell is not None
        started = time.monotonic()
        if not shell.channel.is_open():
            # Lost while idle (an idle connection cut, a shell killed from outside): nothing of this
            # command ran, so it runs in a new shell, and the observation says so.
            reason, where = shell.channel.gone_reason(), self._cwd
            self._replace_shell(shell)
            done = self._run(command, timeout, limit)
            note = f"{reason}; a new shell was started in {where}" + (f"; {done.note}" if done.note else "")
            return Observation(
                done.output, done.exit_code, time.monotonic() - started,
                timed_out=done.timed_out, elided=done.elided, note=note,
            )  # fmt: skip
        note = ""
        try:
            output, elided, status = shell.run(command, timeout, limit)
        except ShellGone as gone:
            # `exit`, `exec`, a kill from inside, or a lost connection: a new shell in the last known
            # directory. Whatever the old shell still ran is killed with its process group.
            self._replace_shell(shell)
            return Observation(
                "", None, time.monotonic() - started, note=f"{gone}; a new shell was started in {self._cwd}"
            )
        if status is None:  # out of time: kill what the command started, then the shell if need be
            self._kill_children(shell.pid)
            try:
                output, elided, status = shell.wait(KILL_GRACE)
            except ShellGone:
                status = None
            if status is None:
                self._replace_shell(shell)
                note = f"the shell did not come back from the timeout and was restarted in {self._cwd}"
            return Observation(
                output, None, time.monotonic() - started, timed_out=True, elided=elided, note=note
            )  # fmt: skip
        code, self._cwd = status
        return Observation(output, code, time.monotonic() - started, elided=elided)

    def _open_shell(self, cwd: str) -> Shell:
        try:
            return Shell.open(self._connect(cwd), cwd)
        except (OSError, ShellGone) as exc:
            died = self._died(exc)
            if isinstance(died, EnvironmentDied):
                raise died from exc
            raise EnvironmentDied(f"no shell could be started in the environment: {exc}") from exc

    def _replace_shell(self, shell: Shell) -> None:
        shell.close()
        self._shell = None
        self._exec(f"kill -9 -{shell.pid} 2>/dev/null")  # the old shell's group, if any is left
        self._shell = self._open_shell(self._cwd)

    def _kill_children(self, shell_pid: int) -> None:
        # Every process in the shell's process group except the shell: the command and all it started.
        self._exec(
            f"for p in $(pgrep -g {shell_pid}); do [ $p = {shell_pid} ] || kill -9 $p 2>/dev/null; done"
        )

    def _absolute(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self._cwd, path))
