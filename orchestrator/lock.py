"""The release lock: one apply or revert at a time per project in a journal.

A row in the journal's `lock` table names the holder (user, host, PID namespace, PID, process
start time, and the mark its local commands carry); on PostgreSQL a session advisory lock is held
beside it, so a holder whose session died is known to be gone. A holder on this machine is checked
by PID and start time (PIDs are reused), but only when it provably ran in our PID namespace: a
container with host networking has our host name and PIDs of its own. Any other holder is judged
by its heartbeat. Taking over a dead holder's lock first kills its commands still running here.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import sys
import time
import uuid
from typing import Any

import psutil
import sqlalchemy as sa

from .errors import InputError, LockHeld
from .journal_schema import events, lock_table
from .logs import get_logger
from .transports.local import RUN_ID, kill_commands

STALE_HEARTBEAT = 120.0  # a foreign host's lock not refreshed for this long is reported stale
ADVISORY_KEY = 0x72656C65  # "rele": the first of the two keys of every project's advisory lock


def advisory_keys(project: str) -> dict[str, int]:
    """The PostgreSQL advisory lock of `project`: ("rele", 32 bits of a hash of its id). Two
    projects whose hashes collide share it, and one then waits for the other: safe, never both."""
    digest = hashlib.sha256(project.encode()).digest()
    return {"k1": ADVISORY_KEY, "k2": int.from_bytes(digest[:4], "big", signed=True)}


_TRY_ADVISORY = sa.text("SELECT pg_try_advisory_lock(CAST(:k1 AS integer), CAST(:k2 AS integer))")
_DROP_ADVISORY = sa.text("SELECT pg_advisory_unlock(CAST(:k1 AS integer), CAST(:k2 AS integer))")


def _pid_namespace() -> int | None:
    if sys.platform != "linux":
        return 0  # no PID namespaces: one per machine
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None  # unknown: no holder is ever judged by PID from here


PID_NS = _pid_namespace()


def process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int | None, started: float | None) -> bool:
    """Same PID and same start time: PIDs are reused, start times tell them apart."""
    if pid is None:
        return False
    now_start = process_start(pid)
    if now_start is None:
        return False
    return started is None or abs(now_start - started) < 1.0


def same_machine(hostname: str | None, pid_ns: int | None) -> bool:
    """A process recorded with these can be looked up by PID here: same host name and provably
    the same PID namespace (a record without one, from an older version, is not)."""
    return hostname == socket.gethostname() and pid_ns is not None and pid_ns == PID_NS


def holder_gone(hostname: str | None, pid: int | None, proc_start: float | None, pid_ns: int | None) -> bool:
    """The process that wrote a record ran here (same_machine) and is no longer running. A process
    on another machine, or in another PID namespace, is never known to be gone from here."""
    return same_machine(hostname, pid_ns) and not process_alive(pid, proc_start)


def _holder_message(row: Any, *, stale: bool) -> str:
    if row is None:
        return "the release lock is held by another process (PostgreSQL advisory lock)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.since))
    msg = (f"the release lock {row.lock_id} is held by {row.owner}@{row.hostname} pid {row.pid} "
           f"({row.command}) since {since}")
    if row.hostname == socket.gethostname() and not same_machine(row.hostname, row.pid_ns):
        msg += " in another PID namespace (another container?)"
    if stale:
        msg += (f"; its heartbeat is {time.time() - row.heartbeat:.0f}s old, so it looks stale: if that "
                f"process is really gone, run `release unlock {row.lock_id}`")
    return msg


class ReleaseLock:
    """The lock of one project in a journal. `acquire` ... `release`; `heartbeat` while held."""

    def __init__(self, engine: sa.Engine, project: str) -> None:
        self.engine = engine
        self.project = project
        self._mine = lock_table.c.project == project
        self._keys = advisory_keys(project)
        self.hostname = socket.gethostname()
        self.lock_id: str | None = None
        self._advisory: sa.Connection | None = None

    @property
    def _is_pg(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def acquire(self, command: str, *, wait: float = 0.0) -> str:
        """Take the lock, or raise LockHeld naming the holder once `wait` seconds have passed."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._try(command)
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def _take_advisory(self) -> None:
        conn = self.engine.connect()
        got = conn.execute(_TRY_ADVISORY, self._keys).scalar()
        conn.commit()
        if got:
            self._advisory = conn
            return
        conn.close()
        row = self._row()
        for _ in range(40):  # the holder writes its row just after taking the advisory lock
            if row is not None:
                break
            time.sleep(0.05)
            row = self._row()
        raise LockHeld(_holder_message(row, stale=False))

    def _try(self, command: str) -> str:
        if self._is_pg and self._advisory is None:
            self._take_advisory()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(lock_table).where(self._mine)).first()
            if row is not None:
                self._take_over(conn, row)
            lock_id = uuid.uuid4().hex[:12]
            now, pid = time.time(), os.getpid()
            conn.execute(lock_table.insert().values(
                project=self.project, lock_id=lock_id, owner=getpass.getuser(), hostname=self.hostname, pid=pid,
                proc_start=process_start(pid), pid_ns=PID_NS, run_id=RUN_ID, command=command, since=now,
                heartbeat=now))
        self.lock_id = lock_id
        get_logger().debug("lock.acquired", lock_id=lock_id)
        return lock_id

    def _take_over(self, conn: sa.Connection, row: Any) -> None:
        """Remove the lock row of a holder that is gone, or raise LockHeld. On SQLite a holder is
        gone when its process provably is; on PostgreSQL holding the advisory lock means its
        session is gone, unless its process still runs here (its connection broke, not it)."""
        here = same_machine(row.hostname, row.pid_ns)
        alive = here and process_alive(row.pid, row.proc_start)
        if alive or not (here or self._is_pg):
            self.close()  # the advisory lock is not ours to keep while its holder lives
            stale = not here and time.time() - row.heartbeat > STALE_HEARTBEAT
            raise LockHeld(_holder_message(row, stale=stale))
        why = "whose process is gone" if here else "whose PostgreSQL session is gone"
        detail = (f"took over lock {row.lock_id} of {row.owner}@{row.hostname} pid {row.pid} "
                  f"({row.command}), {why}; {_stop_commands(row, here)}")
        conn.execute(lock_table.delete().where(self._mine))
        conn.execute(events.insert().values(ts=time.time(), project=self.project, event="lock_takeover",
                                            detail=detail))
        # Said on stderr too: whoever runs the revert after a crash should know.
        get_logger().warning("lock.takeover", message=detail)

    def _row(self) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(lock_table).where(self._mine)).first()

    def _holder_alive(self, row: Any) -> str | None:
        """Why the lock's holder counts as alive, or None when it looks gone."""
        if self._is_pg:
            with self.engine.connect() as probe:
                got = probe.execute(_TRY_ADVISORY, self._keys).scalar()
                if got:
                    probe.execute(_DROP_ADVISORY, self._keys)
                probe.commit()
            if not got:
                return "its session still holds the PostgreSQL advisory lock"
        if same_machine(row.hostname, row.pid_ns):
            return "its process is running on this machine" if process_alive(row.pid, row.proc_start) else None
        if self._is_pg:
            return None
        age = time.time() - row.heartbeat
        if age < STALE_HEARTBEAT:
            return (f"its heartbeat is {age:.0f}s old; a lock from another machine or PID namespace counts "
                    f"as stale after {STALE_HEARTBEAT:.0f}s")
        return None

    def heartbeat(self) -> bool:
        """Refresh our lock row; False when it is no longer ours (removed by `release unlock`)."""
        if self.lock_id is None:
            return True
        with self.engine.begin() as conn:
            res = conn.execute(lock_table.update().where(lock_table.c.lock_id == self.lock_id)
                               .values(heartbeat=time.time()))
            return res.rowcount == 1

    def release(self) -> None:
        if self.lock_id is not None:
            with self.engine.begin() as conn:
                conn.execute(lock_table.delete().where(lock_table.c.lock_id == self.lock_id))
            self.lock_id = None
        self.close()

    def close(self) -> None:
        if self._advisory is not None:
            self._advisory.close()
            self._advisory = None

    def unlock(self, lock_id: str) -> None:
        """Remove a stale lock: never one whose holder is known to be alive, which would let a
        second apply run beside it."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(lock_table).where(self._mine)).first()
            if row is None:
                raise InputError("there is no release lock to remove")
            if row.lock_id != lock_id:
                raise InputError(f"lock id {lock_id!r} does not match the lock held ({row.lock_id}); nothing removed")
            alive = self._holder_alive(row)
            if alive:
                raise LockHeld(f"{_holder_message(row, stale=False)}: not stale ({alive}); nothing removed")
            detail = (f"lock {row.lock_id} of {row.owner}@{row.hostname} pid {row.pid} removed by hand; "
                      f"{_stop_commands(row, same_machine(row.hostname, row.pid_ns))}")
            conn.execute(lock_table.delete().where(self._mine))
            conn.execute(events.insert().values(ts=time.time(), project=self.project, event="unlock",
                                                detail=detail))


def _stop_commands(row: Any, here: bool) -> str:
    """Make sure none of a gone holder's local commands still runs (a deploy finishing after the
    revert that follows would put the new version back); says what was found, for the journal."""
    if not here:
        return f"its commands on {row.hostname} cannot be checked from here"
    if not row.run_id:
        return "its commands cannot be looked for (the lock was taken by an older version)"
    killed = kill_commands(row.run_id)
    if not killed:
        return "none of its commands still runs"
    return f"killed {len(killed)} of its commands still running (pid {', '.join(map(str, killed))})"
