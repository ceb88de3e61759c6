"""A database's revisions in one run: one connection and one env.py run, one transaction each.

`alembic upgrade` runs every revision from one env.py run on one connection. The tool must also
journal each revision before it starts, and those journal writes happen on the event loop,
between revisions. So env.py runs once, on the Alembic worker thread, with a `fn` that gives
Alembic one step at a time: after each revision it checks where Alembic's version table now
stands, commits that revision's transaction, answers the caller and waits for the next hop (or the
end of the run). Still one transaction per revision, committed only when the revision ran through.
The caller also asks where the database is through the same connection (`call`).

An env.py that ignores the handed-over connection (`config.attributes["connection"]`) commits on
its own terms; it then gets one hop per env.py run, so that each revision is still journaled on
its own, and the result is read back from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationStep
from sqlalchemy.engine import Connection, RootTransaction
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StepFailed
from ..logs import get_logger
from ._guards import _ALEMBIC_LOCK, _no_bytecode, _scrub, in_worker
from .failures import VERB, NotAtExpectedRevision, failure, fmt, reason, what
from .scripts import Hop

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .runtime import MigrationRunner

T = TypeVar("T")
# Backends whose DDL waits for our COMMIT (SQLite through runtime's BEGIN recipe): a revision may
# run there before its journal intent is durable, and commit after. Elsewhere (MySQL commits each
# DDL statement at once) it waits for the intent before it starts.
TRANSACTIONAL_DDL = frozenset({"postgresql", "sqlite"})
GO_WAIT = 600.0  # seconds a revision waits for its intent (a journal's busy wait is at most 60)


@dataclass
class _Request:
    hop: Hop
    skip: bool  # move the version table past the revision without running its code
    future: Future[tuple[str, ...]]
    # True: commit (the journal's intent is durable); False: roll back, the step is called off.
    go: Future[bool] | None = None

    def may_commit(self) -> bool:
        if self.go is None:
            return True
        try:
            return self.go.result(timeout=GO_WAIT)
        except TimeoutError:
            # Never commit unconfirmed, and never let the caller take the revision for applied:
            # the revision fails, rolled back, with the database's and revision's names.
            raise TimeoutError(f"the journal did not confirm the revision's intent within "
                               f"{GO_WAIT:.0f} s") from None

    @property
    def called_off(self) -> bool:
        return self.go is not None and self.go.done() and not self.go.result()


@dataclass
class _Call:
    """`fn(heads)` on the worker, with the heads read on the session's connection: where the
    database really is, without a connection of its own."""

    fn: Callable[[tuple[str, ...]], Any]
    future: Future[Any]


@dataclass
class _EnvRun:
    """What one env.py run has got to."""

    current: _Request | None
    trans: RootTransaction | None = None
    ours: bool | None = None  # env.py configured Alembic with the handed-over connection
    closed: bool = False  # the caller said there are no more hops
    heads: tuple[str, ...] | None = None  # the version table after the last step, as Alembic wrote it
    split: bool = False  # the revision's autocommit_block() committed the part before it

    def record(self, *, heads: set[str], **_: Any) -> None:
        self.heads = tuple(sorted(heads))


class HopSession:
    """The worker side: `serve()` runs on the Alembic thread until `close()`; `submit()` from
    any thread hands it one hop and returns a Future of the database's heads after it."""

    def __init__(self, runner: MigrationRunner, destination: str | None = None) -> None:
        self.runner = runner
        self.scripts = runner.scripts
        self.destination = destination  # what env.py's context.get_revision_argument() says
        self._queue: queue.SimpleQueue[_Request | _Call | None] = queue.SimpleQueue()

    def submit(self, hop: Hop, *, skip: bool = False, go: Future[bool] | None = None) -> Future[tuple[str, ...]]:
        """`go`: when given, the hop's transaction commits only once it says True."""
        future: Future[tuple[str, ...]] = Future()
        self._queue.put(_Request(hop, skip, future, go))
        return future

    def call(self, fn: Callable[[tuple[str, ...]], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put(_Call(fn, future))
        return future

    def close(self) -> None:
        self._queue.put(None)

    def _take(self) -> _Request | None:
        """The next hop to run, answering calls on the way; one whose caller gave up (cancelled)
        before it started is dropped, and one that starts can no longer be cancelled."""
        while True:
            request = self._queue.get()
            if isinstance(request, _Call):
                self._answer(request)
            elif request is None or request.future.set_running_or_notify_cancel():
                return request

    def _answer(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            heads = self._heads()
        except Exception as exc:
            call.future.set_exception(exc)
            return
        try:
            call.future.set_result(call.fn(heads))
        except Exception as exc:  # noqa: BLE001 - the caller's to raise, not the worker's
            call.future.set_exception(exc)

    def _heads(self) -> tuple[str, ...]:
        """The database's heads, read between revisions (no transaction of ours is open)."""
        if not self.runner.exists():
            return ()  # connecting would create a SQLite file that nothing asked for yet
        conn = self._connection()
        try:
            return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
        except SQLAlchemyError as exc:
            raise StepFailed(f"database {self.runner.name} ({self.runner.masked_url}): cannot read the Alembic "
                             f"version: {_scrub(reason(exc), self.runner.url)}") from None
        finally:
            self._end_read(conn)

    def _end_read(self, conn: Connection) -> None:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - a broken connection: the next use makes a new one
            self._dispose()

    def serve(self) -> None:
        request = None
        try:
            with self.runner.busy, _ALEMBIC_LOCK, _no_bytecode(), self.scripts.on_path():
                request = self._take()
                while request is not None:
                    request = self._env_run(request)
        except BaseException as exc:  # a bug here must not leave a caller waiting for ever
            if request is not None and not request.future.done():
                request.future.set_exception(exc)
            raise
        finally:
            self._dispose()

    def run_all(self, hops: list[tuple[Hop, bool]]) -> list[tuple[str, ...]]:
        """The hops one after the other on the calling thread; the first failure is raised."""
        futures = [self.submit(hop, skip=skip) for hop, skip in hops]
        self.close()
        self.serve()
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ one env.py run

    def _env_run(self, first: _Request) -> _Request | None:
        """Run env.py for `first` and as many further hops as it will take; return the next
        request it did not take (None: the caller closed the session)."""
        run = _EnvRun(first)
        try:
            conn = self._connection()
            script = self.scripts.directory()
            run.trans = self._begin(conn)
        except Exception as exc:
            self._resolve_failure(first, exc, ours=True)
            return self._take()

        def steps(heads: tuple[str, ...], context: MigrationContext) -> Iterator[MigrationStep]:
            # Which connection env.py configured tells whether the revision is in our
            # transaction; the heads it read are where the database really is.
            run.ours = context.connection is conn
            if run.ours:
                context.autocommit_block = functools.partial(self._autocommit_block, run, context, conn)  # type: ignore[method-assign]
            # Alembic checks that each version-table write hits exactly one row and reports the
            # heads it leaves: no query of ours per revision for them.
            context.on_version_apply_callbacks = (*context.on_version_apply_callbacks, run.record)
            heads = tuple(heads)
            early = run.ours and conn.dialect.name in TRANSACTIONAL_DDL
            while run.current is not None:
                request = run.current
                self._check_at(request.hop, heads)
                if request.called_off or (not early and not request.may_commit()):
                    self._call_off(run, heads)
                    return
                run.heads, run.split = None, False
                yield self.scripts.step(request.hop, skip=request.skip)
                if not run.ours:
                    return
                if run.heads is None:
                    raise NotAtExpectedRevision("Alembic did not record the revision in its version table")
                self._check_done(request.hop, run.heads)
                if not request.may_commit():
                    # Alembic believes the revision is in: this env.py run cannot go on.
                    self._call_off(run, heads)
                    return
                heads = run.heads
                assert run.trans is not None
                run.trans.commit()
                run.current = None
                request.future.set_result(heads)
                following = self._take()
                if following is None:
                    run.closed = True
                    return
                run.current = following
                run.trans = self._begin(conn)

        try:
            cfg = self.scripts.config(attributes={"connection": conn})
            with EnvironmentContext(cfg, script, fn=steps, as_sql=False, destination_rev=self.destination):
                script.run_env()
            if run.ours is None:
                raise NotAtExpectedRevision("env.py never ran the migrations (no context.run_migrations())")
        except Exception as exc:
            self._rollback(run)
            if run.current is not None:
                self._resolve_failure(run.current, exc, ours=run.ours is not False, split=run.split)
            else:
                get_logger(node=self.runner.name).warning(
                    "migrate.env_failed", why=f"{type(exc).__name__}: {_scrub(str(exc), self.runner.url)}")
            return None if run.closed else self._take()
        if not run.ours and run.current is not None:
            self._rollback(run)
            self._resolve_foreign(run.current)
        return None if run.closed else self._take()

    @contextlib.contextmanager
    def _autocommit_block(self, run: _EnvRun, context: MigrationContext, conn: Connection) -> Iterator[None]:
        """Alembic's `autocommit_block()` for a revision in our transaction, which Alembic would
        not commit (it commits only one it began itself): we commit the work before the block
        (once the intent is durable, like the revision's last commit), Alembic runs the block
        outside any transaction, and the rest of the revision goes on in a new one of ours."""
        request = run.current
        assert request is not None and run.trans is not None
        if not request.may_commit():
            raise StepFailed(f"{what(self.runner, request.hop)}: called off before its autocommit_block(); "
                             "rolled back")
        run.trans.commit()
        run.split = True  # only now is a part of the revision in the database
        with MigrationContext.autocommit_block(context):
            yield
        run.trans = self._begin(conn)  # bounded by the revision's timeout again

    def _call_off(self, run: _EnvRun, heads: tuple[str, ...]) -> None:
        """The caller said the hop must not happen: whatever it ran is rolled back."""
        self._rollback(run)
        run.trans = None
        request, run.current = run.current, None
        assert request is not None
        request.future.set_result(heads)

    def _resolve_foreign(self, request: _Request) -> None:
        """A revision that ran outside our transaction: the result stands, but it was not atomic.
        Read it back from the database to be sure."""
        where = what(self.runner, request.hop)
        get_logger(node=self.runner.name).warning(
            "migrate.not_atomic", revision=request.hop.revision,
            message=f"{where}: env.py did not use config.attributes['connection']; the revision "
            "ran outside the tool's transaction")
        try:
            after = self.runner.current_heads()
            self._check_done(request.hop, after)
        except NotAtExpectedRevision as exc:
            request.future.set_exception(StepFailed(f"{where}: {exc}"))
        except StepFailed as exc:
            request.future.set_exception(exc)
        else:
            request.future.set_result(after)

    # ------------------------------------------------------------------ database

    def _connection(self) -> Connection:
        return self.runner.connection()  # the plan's, when it handed its runner over

    def _begin(self, conn: Connection) -> RootTransaction:
        trans = conn.begin()
        self.runner._bound(conn)
        return trans

    def _rollback(self, run: _EnvRun) -> None:
        try:
            if run.trans is not None and run.trans.is_active:
                run.trans.rollback()
        except Exception:  # noqa: BLE001 - a broken connection: the next hop gets a new one
            self._dispose()

    def _dispose(self) -> None:
        self.runner.close()

    # ------------------------------------------------------------------ checks, messages

    def _check_at(self, hop: Hop, heads: tuple[str, ...]) -> None:
        unknown = [h for h in heads if not self.scripts.known(h)]
        if unknown:
            raise NotAtExpectedRevision(f"the database is at {fmt(heads)}, which these scripts do not know")
        if hop.direction == "up":
            parents = self.scripts.downs(hop.revision)
            # The version table holds heads only, never an ancestor of another head: with every
            # parent a head, the revision cannot be applied yet. Else walk the history (slow on a
            # long one, so not for every revision of a straight line).
            if parents and set(parents) <= set(heads):
                ok = True
            else:
                applied = self.scripts.closure(heads)
                ok = hop.revision not in applied and all(d in applied for d in parents)
        else:
            ok = hop.revision in heads
        if not ok:
            raise NotAtExpectedRevision(
                f"the database is at {fmt(heads)}, not at {hop.from_rev or 'base'} "
                f"where this {VERB[hop.direction]} starts")

    def _check_done(self, hop: Hop, after: tuple[str, ...]) -> None:
        done = hop.revision in after if hop.direction == "up" else hop.revision not in after
        if not done:
            raise NotAtExpectedRevision(f"after the {VERB[hop.direction]} the version table reads {fmt(after)}")

    def _resolve_failure(self, request: _Request, exc: Exception, *, ours: bool, split: bool = False) -> None:
        if not request.future.done():
            request.future.set_exception(failure(self.runner, request.hop, exc, ours=ours, split=split))


class Session:
    """The event loop's side of a HopSession: `async with runner.session(target) as s:` then
    `await s.apply(hop)` per revision, each between its journal intent and outcome."""

    def __init__(self, runner: MigrationRunner, destination: str | None) -> None:
        self._hops = HopSession(runner, destination)
        self._served: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Session:
        self._served = asyncio.ensure_future(in_worker(self._hops.serve))
        return self

    async def apply(self, hop: Hop, *, skip: bool = False, go: Future[bool] | None = None) -> tuple[str, ...]:
        """`go`: the hop may run at once but commits only once this says True (rolls back on
        False); without it, it runs and commits."""
        return await asyncio.wrap_future(self._hops.submit(hop, skip=skip, go=go))

    async def call(self, fn: Callable[[tuple[str, ...]], T]) -> T:
        """`fn(heads)` on the worker (scripts load there, under Alembic's lock), with the heads
        read on this session's connection."""
        return await asyncio.wrap_future(self._hops.call(fn))

    async def __aexit__(self, *exc: Any) -> None:
        self._hops.close()
        assert self._served is not None
        # Wait for the worker to let go of the connection (and of Alembic's lock) before the
        # next database starts; a cancelled caller does not wait for a revision still running.
        await asyncio.shield(self._served)
