"""A `local` host: a directory on this machine; commands run as `sh -c` subprocesses there."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from ..environment import inherited_env
from .base import Command, CommandResult, Transport, tail

KILL_GRACE = 3.0


# The child stays in our process group (a crash of the group takes it along), but ignores the
# terminal's SIGINT so that Ctrl-C lets a running command finish (SPEC §2). An ignored signal
# stays ignored across exec. Done by the shell rather than a preexec_fn, which is unsafe in a
# process with threads (the journal and Alembic workers). The trap alone leaves a window between
# exec and the trap in which a Ctrl-C kills the new shell, so SIGINT is also blocked while we
# spawn: the child inherits the blocked mask, and `trap ""` then discards a pending SIGINT.
SHIELDED = 'trap "" INT; exec sh -c "$1"'


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
    """SIGKILL a process and every descendant (they share our process group, so no killpg).

    Freeze first, parents before children, then kill: killing a child first would let its shell
    parent run the next command of its script (`sleep 30; touch late`) before it dies too.
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
    for proc in frozen:
        try:
            proc.kill()
        except psutil.Error:
            pass


async def run_shell(script: str, *, cwd: Path, env: dict[str, str], timeout: float,
                    running: set[int]) -> CommandResult:
    """`sh -c script` as a child of this process, in our process group, shielded from the
    terminal's Ctrl-C; past `timeout`, or when cancelled, its whole process tree is killed.

    `running` holds the PIDs under way, for kill_running(). For any transport whose commands
    are processes on this machine.
    """
    start = time.monotonic()
    with sigint_blocked():
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", SHIELDED, "sh", script, cwd=cwd, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
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
        self.root.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        return {"RELEASE_PROJECT_DIR": str(self.project_dir)}

    async def run(self, command: Command) -> CommandResult:
        self.root.mkdir(parents=True, exist_ok=True)
        return await run_shell(command.script, cwd=self.root, env={**inherited_env(), **command.env},
                               timeout=command.timeout, running=self._running)

    def has_state(self) -> bool:
        return self.root.is_dir()

    def kill_running(self) -> None:
        for pid in list(self._running):
            kill_tree(pid)
