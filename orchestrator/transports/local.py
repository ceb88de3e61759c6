"""A `local` host: a directory on this machine; commands run as `sh -c` subprocesses there."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

from ..environment import inherited_env
from ..statedir import make_private_dir
from .base import Command, CommandResult, Transport, tail

KILL_GRACE = 3.0
RUN_ENV = "RELEASE_RUN_ID"
# This process's mark on every command it starts (in their environment, as RELEASE_RUN_ID): the
# lock row records it, so that whoever takes over the lock of a dead process finds its commands.
RUN_ID = uuid.uuid4().hex


# A command must die with the tool, whichever way the tool dies (kill -9 of its PID, the OOM
# killer, its whole process group), or a deploy still running would finish after the revert that
# follows and put the new version back. So each command is the leader of a process group of its
# own, and the wrapper below starts a watcher beside it that reads a pipe whose only write end is
# held by the tool: nothing is ever written there, so the read returns only when the tool is gone
# and the kernel closed that end; the watcher then kills the command's group (itself included).
# The watcher is a background job, the command the foreground one; when the command ends the
# wrapper kills the watcher and exits with the command's status.
#
# The terminal's Ctrl-C goes to the tool's process group, so it no longer reaches the commands,
# and a running command finishes; SIGINT is ignored as well (an ignored signal stays
# ignored across exec) for anything that sends it to the command's group. Done by the shell
# rather than a preexec_fn, which is unsafe in a process with threads (the journal and Alembic
# workers). SIGINT is also blocked while we spawn, so that the instant between fork and the new
# process group cannot let a Ctrl-C in: the child inherits the blocked mask, and `trap ""` then
# discards a pending SIGINT.
SUPERVISED = (
    'trap "" INT; '
    "exec 3<&0 </dev/null; "
    "{ while read -r _; do :; done; kill -KILL -$$; } <&3 >/dev/null 2>&1 & w=$!; "
    "exec 3<&-; "
    'sh -c "$1"; s=$?; '
    'kill -KILL "$w" 2>/dev/null; exit "$s"'
)

_lifeline_fds: tuple[int, int] | None = None
_lifeline_lock = threading.Lock()


def _lifeline() -> int:
    """The read end of this process's lifeline pipe, for a command's stdin. Both ends are
    close-on-exec, so no other child keeps the write end open after we are gone."""
    global _lifeline_fds
    with _lifeline_lock:
        if _lifeline_fds is None:
            _lifeline_fds = os.pipe()
        return _lifeline_fds[0]


_spawning = threading.local()  # spawns under way per thread: the signal mask is per thread


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread (the one that forks) while a spawn is under way; the process
    still gets a Ctrl-C meanwhile, through another thread or once it is unblocked.

    Counted rather than saved and restored: spawns interleave at their awaits, so their exits are
    not in the order of their entries, and restoring a saved mask would leave SIGINT blocked.
    """
    count = getattr(_spawning, "count", 0)
    if count == 0:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    _spawning.count = count + 1
    try:
        yield
    finally:
        _spawning.count -= 1
        if _spawning.count == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def kill_tree(pid: int) -> None:
    """SIGKILL a command: its process group at once, and every descendant that left the group.

    The tree is frozen first, parents before children, then killed: killing a child first would
    let its shell parent run the next command of its script (`sleep 30; touch late`) before it
    dies too. A SIGKILL to the group reaches all its members in one system call.
    """
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    frozen: list[psutil.Process] = []
    todo = [root]
    while todo:
        proc = todo.pop()
        try:
            proc.suspend()
            frozen.append(proc)
            todo.extend(proc.children())
        except psutil.Error:
            pass
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:  # only a group we made: never the tool's own
            os.killpg(pid, signal.SIGKILL)
    for proc in frozen:
        try:
            proc.kill()
        except psutil.Error:
            pass


def commands_of(run_id: str) -> list[psutil.Process]:
    """The commands of the process that marked them `run_id` still running on this machine (in
    our PID namespace): each a wrapper that leads its process group. What a finished command left
    behind (a daemon it started) is not a running command and is left alone."""
    found = []
    for proc in psutil.process_iter():
        try:
            if (proc.pid == os.getpgid(proc.pid) and proc.cmdline()[2:3] == [SUPERVISED]
                    and proc.environ().get(RUN_ENV) == run_id):
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def kill_commands(run_id: str) -> list[int]:
    """Kill the running commands of `run_id` (see commands_of) and wait until they are gone;
    returns their PIDs."""
    found = commands_of(run_id)
    for proc in found:
        kill_tree(proc.pid)
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline and any(_running(p) for p in found):
        time.sleep(0.02)
    return [p.pid for p in found]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def run_shell(script: str, *, cwd: Path, env: dict[str, str], timeout: float,
                    running: set[int]) -> CommandResult:
    """`sh -c script` as a child of this process, in a process group of its own, out of reach of
    the terminal's Ctrl-C, killed when this process dies (SUPERVISED); past `timeout`, or when
    cancelled, its whole process tree is killed.

    `running` holds the PIDs under way, for kill_running(). For any transport whose commands
    are processes on this machine.
    """
    start = time.monotonic()
    with sigint_blocked():
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", SUPERVISED, "sh", script, cwd=cwd, env={**env, RUN_ENV: RUN_ID},
            stdin=_lifeline(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            process_group=0,
        )
    running.add(proc.pid)
    try:
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            kill_tree(proc.pid)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), KILL_GRACE)
            except asyncio.TimeoutError:  # a daemonised grandchild holds the pipes open
                out, err = b"", b""
            return CommandResult(None, tail(out), tail(err), time.monotonic() - start, timed_out=True)
        except asyncio.CancelledError:
            kill_tree(proc.pid)
            raise
    finally:
        running.discard(proc.pid)
    return CommandResult(proc.returncode, tail(out), tail(err), time.monotonic() - start)


class LocalTransport(Transport):
    def __init__(self, name: str, root: Path, project_dir: Path) -> None:
        self.name = name
        self.root = Path(root)
        self.project_dir = Path(project_dir)
        self._running: set[int] = set()

    async def connect(self) -> None:
        make_private_dir(self.root)  # a directory the tool creates is the operator's alone

    def environment(self) -> dict[str, str]:
        return {"RELEASE_PROJECT_DIR": str(self.project_dir)}

    async def run(self, command: Command) -> CommandResult:
        make_private_dir(self.root)
        return await run_shell(command.script, cwd=self.root, env={**inherited_env(), **command.env},
                               timeout=command.timeout, running=self._running)

    def has_state(self) -> bool:
        return self.root.is_dir()

    def kill_running(self) -> None:
        for pid in list(self._running):
            kill_tree(pid)
