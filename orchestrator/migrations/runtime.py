"""Alembic against the database: one database, one revision, one transaction at a time (SPEC §2).

The runner builds a programmatic Alembic configuration (no alembic.ini), opens the connection
itself and hands it to env.py through `config.attributes["connection"]`. Every revision runs in
its own transaction that is committed only when the revision succeeded, so a release that fails
half-way leaves each database at the last revision that worked, and the journal can say which.

This module owns what touches a database: URL resolution, engines and connections, the heads a
database is at, applying one hop under a timeout, and the failure messages. Which hops to apply
comes from the script graph in scripts.py (`MigrationRunner.scripts`).

The runner is synchronous; the executor calls it through `in_worker`, on one worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationStep
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from ..errors import InputError, StepFailed
from ..logs import get_logger
from ..secrets import mask_url
from ._guards import _ALEMBIC_LOCK, _no_bytecode, _scrub
from .risks import risks
from .scripts import Hop, ScriptGraph


T = TypeVar("T")

_VERB = {"up": "upgrade", "down": "downgrade"}

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_AUTHORITY_END = re.compile(r"[/?#]")
_PG_DRIVERS = {"postgres", "postgresql", "postgresql+psycopg"}
_CONNECT_TIMEOUT = 10  # seconds; an unreachable server should fail a step, not hang it


# --------------------------------------------------------------------------- URLs


def resolve_url(url: str, project_root: Path, *, node: str | None = None) -> str:
    """The SQLAlchemy URL the runner connects to: variables substituted, paths anchored, driver fixed.

    `${VAR}` comes from the environment (percent-encoded where it is a password or a query
    parameter's value); a relative sqlite path is relative to `project_root`
    (not to whatever directory the tool was started from); `postgresql://` means psycopg 3.
    """
    where = f"database {node}: " if node else ""
    missing = sorted({m.group(1) for m in _VAR_RE.finditer(url) if m.group(1) not in os.environ})
    if missing:
        raise InputError(
            f"{where}url: environment variable{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} not set"
        )
    url = _substitute(url)
    try:
        u = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise InputError(f"{where}url: not a database URL: {mask_url(url)}") from exc
    if u.drivername in _PG_DRIVERS:
        u = u.set(drivername="postgresql+psycopg")
    elif u.get_backend_name() == "sqlite" and _sqlite_file(u.database) is not None:
        path = Path(os.path.expanduser(u.database))
        if not path.is_absolute():
            path = Path(project_root) / path
        u = u.set(database=str(path))
    return u.render_as_string(hide_password=False)


def _substitute(url: str) -> str:
    """`${VAR}`s replaced by their values. A value that is a password or a query parameter's value
    is percent-encoded: the variable holds the password itself, and an `@`, `/` or `?` in it must
    not end the field (`p@ss/word` would make `ss` the host). Elsewhere (a whole URL, a host, a
    path) the value goes in as it is."""
    scheme = url.find("://")
    colon = at = query = -1
    if scheme != -1:
        m = _AUTHORITY_END.search(url, scheme + 3)
        end = m.start() if m else len(url)
        at = url.rfind("@", scheme + 3, end)
        colon = url.find(":", scheme + 3, at) if at != -1 else -1
        query = url.find("?", end)

    def value(m: re.Match[str]) -> str:
        raw = os.environ[m.group(1)]
        pos = m.start()
        in_password = colon != -1 and colon < pos < at
        in_query_value = query != -1 and pos > query and url.rfind("=", query, pos) > max(
            url.rfind("&", query, pos), query)
        return quote(raw, safe="") if in_password or in_query_value else raw

    return _VAR_RE.sub(value, url)


def _sqlite_file(database: str | None) -> str | None:
    """The file behind a sqlite URL's database part, or None for in-memory/URI databases."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def _reason(exc: BaseException) -> str:
    """A driver error without SQLAlchemy's wrapping and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text or type(exc).__name__


# ------------------------------------------------------------------- SQLite transactions


def _make_sqlite_transactional(engine: Engine) -> None:
    """SQLAlchemy's documented pysqlite recipe: let SQLAlchemy, not sqlite3, emit BEGIN.

    In its legacy mode sqlite3 neither begins a transaction before DDL nor lets a CREATE/ALTER
    be rolled back; with sqlite3's own transaction handling off and an explicit BEGIN on every
    SQLAlchemy transaction, a failed revision's DDL is rolled back like on PostgreSQL.
    """

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _explicit_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


# ----------------------------------------------------------------------------- runner


class _NotAtExpectedRevision(Exception):
    pass


class MigrationRunner:
    """Alembic operations on one database node (`url` already resolved by `resolve_url`).

    The script-graph methods are delegations to `self.scripts`, kept so callers need one object.
    """

    def __init__(self, name: str, url: str, script_location: Path, timeout: float | None = None) -> None:
        self.name = name
        self.url = url
        self.timeout = timeout  # seconds per SQL statement of a revision (the node's `timeout`)
        self.scripts = ScriptGraph(name, url, script_location)

    def __repr__(self) -> str:
        return f"MigrationRunner({self.name!r}, {mask_url(self.url)!r}, {str(self.script_location)!r})"

    @property
    def script_location(self) -> Path:
        return self.scripts.location

    @property
    def dialect(self) -> str:
        """The backend name (`sqlite`, `postgresql`, ...), as `risks()` takes it."""
        return make_url(self.url).get_backend_name()

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def risks(self, sql: str, dialect: str | None = None) -> list[str]:
        """`risks()` for this database's dialect."""
        return risks(sql, dialect or self.dialect)

    # ------------------------------------------------------------ scripts

    def check_scripts(self, target: str = "head") -> None:
        self.scripts.check_scripts(target)

    def resolve_target(self, target: str = "head") -> str | None:
        return self.scripts.resolve_target(target)

    def hops(self, from_rev: str | None, to_rev: str | None) -> list[Hop]:
        return self.scripts.hops(from_rev, to_rev)

    def is_reversible(self, revision: str) -> bool:
        return self.scripts.is_reversible(revision)

    def offline_sql(self, from_rev: str | None, to_rev: str | None) -> str:
        return self.scripts.offline_sql(from_rev, to_rev)

    # ----------------------------------------------------------- database

    def _sqlite_path(self) -> Path | None:
        u = make_url(self.url)
        if u.get_backend_name() != "sqlite":
            return None
        file = _sqlite_file(u.database)
        return Path(file) if file else None

    def _engine(self) -> Engine:
        u = make_url(self.url)
        kwargs: dict[str, object] = {"poolclass": NullPool}
        if u.get_backend_name() == "postgresql" and "connect_timeout" not in u.query:
            kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT}
        engine = create_engine(u, **kwargs)
        if u.get_backend_name() == "sqlite":
            _make_sqlite_transactional(engine)
        return engine

    def _connect(self, engine: Engine) -> Connection:
        try:
            return engine.connect()
        except Exception as exc:
            raise StepFailed(
                f"database {self.name}: cannot connect to {self.masked_url}: "
                f"{_scrub(_reason(exc), self.url)}"
            ) from None  # the chained driver error may carry the password

    def exists(self) -> bool:
        """False only for a SQLite file that is not there yet (checked without creating it).

        Server databases are never created by the tool, so they count as existing; whether
        one is reachable is what current_heads() finds out.
        """
        path = self._sqlite_path()
        return path is None or path.exists()

    def current_heads(self) -> tuple[str, ...]:
        """The revisions the database is at; () when it has none (or its file does not exist)."""
        if not self.exists():
            return ()  # connecting would create the file: plan must create nothing
        engine = self._engine()
        try:
            with self._connect(engine) as conn:
                try:
                    heads = MigrationContext.configure(conn).get_current_heads()
                except SQLAlchemyError as exc:
                    raise StepFailed(
                        f"database {self.name} ({self.masked_url}): cannot read the Alembic "
                        f"version: {_scrub(_reason(exc), self.url)}"
                    ) from None
                conn.rollback()
            return tuple(sorted(heads))
        finally:
            engine.dispose()

    def _check_at(self, hop: Hop, heads: tuple[str, ...]) -> None:
        unknown = [h for h in heads if not self.scripts.known(h)]
        if unknown:
            raise _NotAtExpectedRevision(
                f"the database is at {_fmt(heads)}, which these scripts do not know"
            )
        applied = self.scripts.closure(heads)
        if hop.direction == "up":
            ok = hop.revision not in applied and all(d in applied for d in self.scripts.downs(hop.revision))
        else:
            ok = hop.revision in heads
        if not ok:
            raise _NotAtExpectedRevision(
                f"the database is at {_fmt(heads)}, not at {hop.from_rev or 'base'} "
                f"where this {_VERB[hop.direction]} starts"
            )

    def apply_hop(self, hop: Hop) -> tuple[str, ...]:
        """Run exactly one revision in its own transaction; return the heads after it.

        The transaction is ours, handed to env.py as `config.attributes["connection"]`, and is
        committed only when the revision ran through and the version table shows it.
        """
        script = self.scripts.directory()
        step = self.scripts.step(hop)
        what = f"database {self.name}: revision {hop.revision} ({_VERB[hop.direction]})"

        path = self._sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

        engine = self._engine()
        seen: dict[str, bool] = {}
        after: tuple[str, ...] = ()
        try:
            with _ALEMBIC_LOCK, _no_bytecode(), self._connect(engine) as conn:

                def steps(heads: tuple[str, ...], context: MigrationContext) -> list[MigrationStep]:
                    # Which connection env.py configured tells whether the revision is in our
                    # transaction; the heads it read are where the database really is.
                    seen["ours"] = context.connection is conn
                    self._check_at(hop, tuple(heads))
                    return [step]

                trans = conn.begin()
                try:
                    self._bound(conn)
                    cfg = self.scripts.config(attributes={"connection": conn})
                    with EnvironmentContext(
                        cfg, script, fn=steps, as_sql=False, destination_rev=hop.to_rev
                    ):
                        script.run_env()
                    if not seen:
                        raise _NotAtExpectedRevision(
                            "env.py never ran the migrations (no context.run_migrations())"
                        )
                    if seen["ours"]:
                        after = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
                        self._check_done(hop, after)
                    trans.commit()
                finally:
                    if trans.is_active:
                        trans.rollback()
        except StepFailed:
            raise
        except Exception as exc:
            raise self._failure(what, exc, seen) from None
        finally:
            engine.dispose()

        if not seen["ours"]:
            # env.py ignored the handed-over connection and committed on its own: the result
            # stands, but it was not atomic. Read it back from the database to be sure.
            get_logger(node=self.name).warning(
                "migrate.not_atomic", revision=hop.revision,
                message=f"{what}: env.py did not use config.attributes['connection']; the revision "
                "ran outside the tool's transaction")
            after = self.current_heads()
            try:
                self._check_done(hop, after)
            except _NotAtExpectedRevision as exc:
                raise StepFailed(f"{what}: {exc}") from None
        return after

    def _bound(self, conn: Connection) -> None:
        """Bound the revision's SQL by `timeout`: per statement on PostgreSQL (statement_timeout),
        for the whole revision on SQLite (a progress handler); the aborted statement rolls the
        revision back as any error does. A worker thread cannot be killed from outside, so the
        bound has to come from the database; Python code in a revision is not bounded."""
        if not self.timeout:
            return
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(self.timeout * 1000)}")
        elif conn.dialect.name == "sqlite":
            deadline = time.monotonic() + self.timeout
            conn.connection.driver_connection.set_progress_handler(
                lambda: 1 if time.monotonic() > deadline else 0, 10_000)

    def _check_done(self, hop: Hop, after: tuple[str, ...]) -> None:
        done = hop.revision in after if hop.direction == "up" else hop.revision not in after
        if not done:
            raise _NotAtExpectedRevision(
                f"after the {_VERB[hop.direction]} the version table reads {_fmt(after)}"
            )

    def _failure(self, what: str, exc: Exception, seen: dict[str, bool]) -> StepFailed:
        if isinstance(exc, _NotAtExpectedRevision):
            return StepFailed(f"{what}: {exc}; nothing was changed")
        reason = _scrub(_reason(exc), self.url)
        if seen.get("ours", True):
            try:
                now = _fmt(self.current_heads())
            except StepFailed:
                now = "an unknown revision (cannot read it back)"
            return StepFailed(
                f"{what} failed and was rolled back; the database stays at {now}: "
                f"{type(exc).__name__}: {reason}"
            )
        return StepFailed(
            f"{what} failed: {type(exc).__name__}: {reason}. Its env.py did not run on the "
            "connection the tool handed over (config.attributes['connection']), so the revision "
            "ran outside the tool's transaction and MAY BE HALF-APPLIED; check the schema by hand"
        )


# ------------------------------------------------------------------------------ worker

_worker: ThreadPoolExecutor | None = None
_worker_guard = threading.Lock()


async def in_worker(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking runner call off the event loop, on the one thread that runs Alembic.

    A single worker thread keeps migrations one at a time even before `_ALEMBIC_LOCK` is taken,
    and keeps slow DDL from stalling the loop that drives the hosts.
    """
    global _worker
    with _worker_guard:
        if _worker is None:
            _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_worker, functools.partial(fn, *args, **kwargs))


def _fmt(heads: tuple[str, ...]) -> str:
    return ", ".join(heads) if heads else "base (no revision)"
