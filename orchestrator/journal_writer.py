"""A run's step records, written by one thread with group commit.

Each step's intent must be durable before its command starts, and its outcome after it ends.
Written from a pool of threads, those commits queue on SQLite's write lock, whose busy handler
sleeps for milliseconds at a time: most of a step's overhead was that wait. Here one thread
writes; the writes that arrive while it commits go into the next transaction together, so a
wave of steps starting at once costs one fsync, and every caller still resumes only once its
own write is committed.

A held write (`hold`) is queued but not committed on its own: it goes into the transaction of the
run's next write, whichever step's, or of `flush`. A database walk holds each revision's outcome
so that it is committed with the next revision's intent: one fsync between two revisions instead
of two. A crash loses a held write, which leaves that one step in doubt; the database's own
version table decides it (`Journal.resolve_database`). The holder flushes before it stops holding.

The writer keeps one connection for the run (`close` ends it): a pool checkout per commit, with a
PostgreSQL journal's ping of the server, cost a round trip on every step. A write that fails drops
the connection, so the next one starts on a fresh one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")
Write = Callable[[sa.Connection], Any]
# (ok, value or exception) per write of a batch, in order.
Results = list[tuple[bool, Any]]
# A held write, and what to call once it is durable (the `after-outcome` fault point).
Held = tuple[Write, Callable[[], None]]


class JournalWriter:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._held: list[Held] = []
        self._busy = False
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sa.Connection | None = None  # used on the writer's thread only

    async def write(self, fn: Callable[[sa.Connection], T]) -> T:
        """`fn(conn)` committed, with whatever else is waiting to be written."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, done))
        if not self._busy:
            self._busy = True
            # On the next turn of the loop: the steps starting in this one join the batch.
            loop.call_soon(self._flush, loop)
        return await done

    def hold(self, fn: Write, durable: Callable[[], None] = lambda: None) -> None:
        """`fn(conn)` committed with the next write; `durable()` is called once it is committed."""
        self._held.append((fn, durable))

    @property
    def holding(self) -> bool:
        return bool(self._held)

    async def flush(self) -> None:
        """Every held write committed; raises if one of them could not be."""
        if self._held:
            await self.write(lambda _conn: None)

    async def close(self) -> None:
        """The run's connection closed, after any commit in flight; a later write opens another."""
        if self._thread is not None:
            await asyncio.wrap_future(self._thread.submit(self._drop))

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        held, self._held = self._held, []
        if self._thread is None:  # its thread ends when the writer is collected, with its run
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        job: Future[Results] = self._thread.submit(self._commit, [fn for fn, _ in held] + [fn for fn, _ in batch])
        job.add_done_callback(lambda f: self._wake(loop, held, batch, f))

    def _wake(self, loop: asyncio.AbstractEventLoop, held: list[Held],
              batch: list[tuple[Write, asyncio.Future[Any]]], job: Future[Results]) -> None:
        try:
            loop.call_soon_threadsafe(self._settle, loop, held, batch, job)
        except RuntimeError:  # the loop closed meanwhile (an interrupted run): nobody waits, it is committed
            pass

    def _settle(self, loop: asyncio.AbstractEventLoop, held: list[Held],
                batch: list[tuple[Write, asyncio.Future[Any]]], job: Future[Results]) -> None:
        try:
            results = job.result()
        except BaseException as exc:  # noqa: BLE001  # the thread itself failed: every write did
            results = [(False, exc)] * (len(held) + len(batch))
        lost = None
        for (_, durable), (ok, value) in zip(held, results):
            if ok:
                durable()  # before any waiting step resumes: nothing runs between commit and this
            elif lost is None:
                lost = value
        results = results[len(held):]
        if lost is not None:
            # Nobody awaits a held write, so its failure goes to the writes that carried it: a
            # journal that refused one write will refuse the next, and a step whose own write
            # went through but is told otherwise stays in doubt, which is safe.
            results = [(False, lost)] * len(batch)
        for (_, done), (ok, value) in zip(batch, results):
            if done.done():  # its caller was cancelled; the write went ahead all the same
                continue
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)
        if self._pending:
            self._flush(loop)
        else:
            self._busy = False

    def _connection(self) -> sa.Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._drop()
            self._conn = self.engine.connect()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection: nothing left to close
                pass

    def _commit(self, writes: list[Write]) -> Results:
        try:
            conn = self._connection()
            with conn.begin():
                return [(True, fn(conn)) for fn in writes]
        except Exception as exc:  # noqa: BLE001
            self._drop()  # whatever state it is in, the next write starts clean
            if len(writes) == 1:
                return [(False, exc)]
        # One write's failure must not fail the others': each again in its own transaction.
        return [self._commit([fn])[0] for fn in writes]
