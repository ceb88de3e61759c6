"""SSH hosts: one asyncssh connection per host per run (ssh_connection.py), shared by every
command on that host.

At most `max_sessions` (8) commands run at once per connection: sshd's MaxSessions is 10, and a
timed-out command still holds its session until its process dies, so the kill channel needs a
slot of its own.

A remote command runs as `exec /bin/sh -c WRAPPER` through the login shell, whatever shell that
is. The wrapper first prints a marker line with its PID, which is also its process group and
session id (sshd calls setsid() for every session and every layer execs the next), and the login
shell's path (sshd's $SHELL): when that is /bin/sh itself, the host's later commands are given to
it as WRAPPER alone, the same shell without the exec (a process less per command, a millisecond
of the host's CPU). Then the wrapper changes to the home directory,
exports the quoted environment and runs `sh -c SCRIPT` (stdin /dev/null) until it ends. asyncssh's
own timeouts only stop waiting; to make a timed-out command really end, the transport opens a
second channel and kills that process group (and session), then closes the first channel.

sshd keeps a session's processes running when its client goes away (no pty, so no SIGHUP): a
deploy still running when `release` is killed would otherwise finish later, possibly after the
`release revert` that followed the crash, and put the new version back. So the channel's stdin is
never closed by the client, and a watcher in the wrapper kills the process group (and session)
when it reads end-of-file there, that is when the channel or the connection went away while the
command still ran: a remote command dies with the tool's connection as a local one dies with the
tool's process group. A controller that loses its network sends no end of file, so the transport
also writes a heartbeat line there, and the watcher kills the command after `silence` seconds
without one.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import shlex
import time
from dataclasses import dataclass, field

import asyncssh

from ..errors import HostUnreachable
from .base import Command, CommandResult, Transport, tail
from .ssh_connection import CLOSE_TIMEOUT, LOST, Client, SSHConnection, reason
from .ssh_remote import bad_env, kill_script, wrapper
from .ssh_plugin import SSHSettings

MAX_SESSIONS = 8
SSHD_MAX_SESSIONS = 10  # the stock limit our channel count must stay under
BUFFER_LIMIT = 64 * 1024  # per stream; the result keeps only tail() of it
KILL_TIMEOUT = 10.0
OPEN_RETRY_SECONDS = 5.0
POSIX_SH = {b"/bin/sh", b"/usr/bin/sh"}  # login shells that run the wrapper as `exec /bin/sh` would


@dataclass(eq=False)
class _Running:
    process: asyncssh.SSHClientProcess
    pgid: int | None = None
    killed: bool = False
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)


def _append(buf: bytearray, chunk: bytes) -> None:
    buf.extend(chunk)
    if len(buf) > 2 * BUFFER_LIMIT:
        del buf[:-BUFFER_LIMIT]


async def _open(conn: asyncssh.SSHClientConnection, client: Client | None, line: str):
    """Open a session channel running `line`, retrying while sshd has not freed old sessions.

    sshd frees a closed session only after it has processed the packets that arrived with the
    close, so a channel opened right after another closed can briefly exceed MaxSessions.
    """
    delay = 0.005
    deadline = time.monotonic() + OPEN_RETRY_SECONDS
    while True:
        try:
            return await conn.create_process(line, encoding=None)
        except asyncssh.ChannelOpenError:
            if (client is not None and client.lost) or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


class SSHTransport(Transport):
    """One SSH host of the inventory."""

    def __init__(
        self,
        name: str,
        spec: SSHSettings,
        *,
        jump: SSHTransport | None = None,
        handshakes: asyncio.Semaphore | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.name = name
        self.spec = spec
        self.jump = jump
        self.max_sessions = max_sessions
        self._link = SSHConnection(name, spec, jump=jump._link if jump is not None else None,
                                   handshakes=handshakes)
        self._sessions = asyncio.Semaphore(max_sessions)
        # The kill channel is opened while up to max_sessions commands hold theirs.
        self._kill_slots = asyncio.Semaphore(max(1, SSHD_MAX_SESSIONS - max_sessions))
        self._running: set[_Running] = set()
        self._tasks: set[asyncio.Task] = set()
        self._kill_generation = 0
        self._login_is_sh = False  # learnt from the first command's marker line

    def __repr__(self) -> str:
        return f"SSHTransport({self.name!r}, {self.where})"

    def dependencies(self) -> list[Transport]:
        return [self.jump] if self.jump is not None else []

    @property
    def where(self) -> str:
        return self._link.where

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        """The open connection (a jump host's is the tunnel of the hosts behind it)."""
        return self._link.connection

    async def connect(self) -> None:
        await self._link.connect()

    @property
    def silence(self) -> int:
        """Seconds without a heartbeat after which the host kills the command: one interval more
        than our own keepalives need to give up on the connection."""
        spec = self.spec
        return max(2, math.ceil(spec.keepalive_interval * (spec.keepalive_count_max + 1)))

    async def _heartbeat(self, process: asyncssh.SSHClientProcess) -> None:
        try:
            while True:
                await asyncio.sleep(self.spec.keepalive_interval)
                process.stdin.write(b".\n")
        except LOST:
            pass  # the channel is gone; the watcher sees the end of file or the silence

    async def run(self, command: Command) -> CommandResult:
        start = time.monotonic()
        problem = bad_env(command)
        if problem:
            return CommandResult(None, error=f"host {self.name}: {problem}")
        generation = self._kill_generation
        async with self._sessions:
            if generation != self._kill_generation:
                # Queued when kill_running() was called: that run is being torn down.
                return CommandResult(
                    None, error=f"host {self.name}: not started, commands were killed"
                )
            try:
                await self.connect()
            except HostUnreachable as exc:
                return CommandResult(None, duration=time.monotonic() - start, error=str(exc))
            return await self._run(self._link.conn, self._link.client, command)

    async def _run(self, conn, client: Client, command: Command) -> CommandResult:
        start = time.monotonic()
        marker = f"__release_pid_{secrets.token_hex(8)}__"
        line = wrapper(command, marker, self.silence)
        if not self._login_is_sh:
            line = "exec /bin/sh -c " + shlex.quote(line)
        try:
            process = await _open(conn, client, line)
        except LOST as exc:
            return CommandResult(
                None,
                duration=time.monotonic() - start,
                error=f"host {self.name} ({self.where}): could not start the command: "
                f"{client.lost or reason(exc)}",
            )
        entry = _Running(process)
        self._running.add(entry)
        beat = asyncio.create_task(self._heartbeat(process))
        timed_out = False
        lost: str | None = None
        try:
            try:
                # stdin stays open: its end tells the wrapper's watcher that we are gone.
                await asyncio.wait_for(self._collect(entry, marker.encode()), command.timeout)
            except asyncio.TimeoutError:
                timed_out = True
            except LOST as exc:
                lost = client.lost or reason(exc)
            except asyncio.CancelledError:
                # Whoever gave up on this command must not leave it running over there.
                self._kill_in_background([entry])
                raise
            if timed_out and not entry.killed:
                entry.killed = True
                await self._kill_remote([entry])
            if timed_out or lost:
                process.close()
            try:
                await asyncio.wait_for(process.wait_closed(), CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, *LOST):
                pass
        finally:
            beat.cancel()
            self._running.discard(entry)
        duration = time.monotonic() - start
        out, err = tail(bytes(entry.out)), tail(bytes(entry.err))
        if timed_out:
            return CommandResult(None, out, err, duration, timed_out=True)
        code = process.returncode
        if code is None and client.lost and not entry.killed:
            lost = lost or client.lost
        if lost:
            return CommandResult(
                None, out, err, duration,
                error=f"host {self.name} ({self.where}): connection lost during the command: "
                f"{lost}",
            )
        if entry.killed:
            return CommandResult(
                code, out, err, duration, error=f"host {self.name}: command killed"
            )
        if code is None:
            return CommandResult(
                None, out, err, duration,
                error=f"host {self.name} ({self.where}): the command ended without an exit status",
            )
        return CommandResult(code, out, err, duration)

    async def _collect(self, entry: _Running, marker: bytes) -> None:
        await asyncio.gather(
            self._pump_stdout(entry, marker), self._pump(entry.process.stderr, entry.err)
        )
        await entry.process.wait_closed()

    async def _pump(self, stream, buf: bytearray) -> None:
        while chunk := await stream.read(65536):
            _append(buf, chunk)

    async def _pump_stdout(self, entry: _Running, marker: bytes) -> None:
        # The marker line may be preceded by what a login shell's rc files print.
        pending = bytearray()
        while chunk := await entry.process.stdout.read(65536):
            if entry.pgid is not None:
                _append(entry.out, chunk)
                continue
            pending.extend(chunk)
            i = pending.find(marker)
            j = pending.find(b"\n", i) if i >= 0 else -1
            if j >= 0:
                pid, _, shell = bytes(pending[i + len(marker):j]).strip().partition(b" ")
                try:
                    entry.pgid = int(pid)
                except ValueError:
                    entry.pgid = 0
                if shell.strip() in POSIX_SH:
                    self._login_is_sh = True
                _append(entry.out, bytes(pending[:i]) + bytes(pending[j + 1:]))
                pending.clear()
            elif len(pending) > BUFFER_LIMIT and i < 0:
                _append(entry.out, bytes(pending[: -len(marker)]))
                del pending[: -len(marker)]
        _append(entry.out, bytes(pending))

    async def _kill_remote(self, entries: list[_Running]) -> None:
        """Kill the remote process groups of `entries` through a channel of their own."""
        pgids = sorted({e.pgid for e in entries if e.pgid and e.pgid > 1})
        conn = self.connection
        if not pgids or conn is None:
            return
        try:
            async with self._kill_slots:
                async def kill() -> None:
                    process = await _open(conn, self._link.client, kill_script(pgids))
                    process.stdin.write_eof()
                    await process.wait()

                await asyncio.wait_for(kill(), KILL_TIMEOUT)
        except (asyncio.TimeoutError, *LOST):
            pass  # best effort: the connection is going away, and its processes with it

    def kill_running(self) -> None:
        self._kill_generation += 1
        self._kill_in_background([e for e in self._running if not e.killed])

    def _kill_in_background(self, entries: list[_Running]) -> None:
        if not entries:
            return
        for e in entries:
            e.killed = True

        async def kill_then_close() -> None:
            try:
                await self._kill_remote(entries)
            finally:
                for e in entries:
                    e.process.close()

        try:
            task = asyncio.get_running_loop().create_task(kill_then_close())
        except RuntimeError:  # no loop running here: closing the channels is all we can do
            for e in entries:
                e.process.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=KILL_TIMEOUT)
        await self._link.close()
