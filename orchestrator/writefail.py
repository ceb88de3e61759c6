"""A write to the journal or the run's log that fails (disk full, a file-size limit, a read-only
file): one clear error naming the cause and the file, and a run that starts nothing more.

The journal's writes are transactions, so a failed one leaves the journal as it was; but a run
that went on would start steps it may be unable to record. The first failed write, wherever it
happens (a worker thread writing the journal, the log sink), is reported to the run under way,
which stops launching steps; it ends with this error (exit 1).
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from .errors import ReleaseError

Listener = Callable[["WriteFailed"], None]
_listeners: list[Listener] = []
LOW_SPACE = 1 << 20  # below this much free space, an I/O error is taken for a full disk


class WriteFailed(ReleaseError):
    """The journal or the run's log could not be written; the run stopped at that point."""

    exit_code = 1


def report(exc: WriteFailed) -> None:
    """Tell the run under way (if any) that a write failed; safe from any thread."""
    for listener in list(_listeners):
        listener(exc)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def cause(exc: OSError) -> str:
    """Why a file write failed, as the operator fixes it."""
    if exc.errno == errno.EFBIG:
        return f"file too large{_size_limit()}"
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _size_limit() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return "" if soft == resource.RLIM_INFINITY else f" (the file-size limit, ulimit -f, is {soft // 1024} KiB)"


def _sqlite_cause(exc: sqlite3.Error, path: Path) -> str | None:
    """SQLite reports EFBIG and most ENOSPC as a bare I/O error: tell them apart by the file-size
    limit and the free space, which is what the operator has to fix."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        return "no space left on device"
    if name.startswith("SQLITE_READONLY"):
        return "the journal is read-only"
    if not name.startswith("SQLITE_IOERR"):
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    sizes = [p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()]
    if soft != resource.RLIM_INFINITY and any(size + 65536 > soft for size in sizes):
        return f"file too large{_size_limit()}"
    if shutil.disk_usage(path.parent).free < LOW_SPACE:
        return "no space left on device"
    return "disk I/O error"


def watch(engine: sa.Engine, path: Path) -> None:
    """Turn a SQLite journal's failed write into WriteFailed (and report it) wherever it happens."""

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: Any) -> None:
        orig = ctx.original_exception
        why = _sqlite_cause(orig, path) if isinstance(orig, sqlite3.Error) else None
        if why is not None:
            failed = WriteFailed(f"journal write failed: {why}: {path}")
            report(failed)
            raise failed from None


class StopOnWriteFailure:
    """While a run walks: the first failed write sets its stop event (on the loop's thread), so
    that no step starts after it; `cause` is that failure."""

    def __init__(self, stop: asyncio.Event, log: Any) -> None:
        self.stop, self.log = stop, log
        self.cause: WriteFailed | None = None
        self.loop = asyncio.get_running_loop()

    def __call__(self, exc: WriteFailed) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.halt(exc)
        else:  # a worker thread writing the journal: before its exception reaches the loop
            self.loop.call_soon_threadsafe(self.halt, exc)

    def halt(self, exc: WriteFailed) -> None:
        if self.cause is None:
            self.cause = exc
            self.stop.set()
            # The cause itself ends the run as its one error message.
            self.log.warning("release.stopping", message="a write failed: no new step starts")
