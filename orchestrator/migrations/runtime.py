"""Alembic against the database: one database, one revision, one transaction at a time.

The runner builds a programmatic Alembic configuration (no alembic.ini), opens the connection
itself and hands it to env.py through `config.attributes["connection"]`. Every revision runs in
its own transaction that is committed only when the revision succeeded, so a release that fails
half-way leaves each database at the last revision that worked, and the journal can say which.

This module owns what touches a database: URL resolution, engines and connections, the heads a
database is at, and the bound on a revision's time. Which hops to apply comes from the script
graph in scripts.py (`MigrationRunner.scripts`); session.py applies them, one connection and one
env.py run for all the hops of a run.

The runner is synchronous; the executor calls it through `in_worker`, on one worker thread.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from ..errors import InputError, StepFailed
from ..secrets import mask_url
from ._guards import _scrub, in_worker
from .offline import Rendered, offline_sql, render
from .risks import risks
from .scripts import Hop, ScriptGraph
from .failures import reason
from .session import HopSession, Session

__all__ = ["MigrationRunner", "in_worker", "resolve_url"]

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


class MigrationRunner:
    """Alembic operations on one database node (`url` already resolved by `resolve_url`).

    The script-graph methods are delegations to `self.scripts`, kept so callers need one object.
    `shown` and `python_path`: see ScriptGraph.
    """

    def __init__(self, name: str, url: str, script_location: Path, timeout: float | None = None, *,
                 shown: str | None = None, python_path: Sequence[Path | str] = ()) -> None:
        self.name = name
        self.url = url
        self.timeout = timeout  # seconds per SQL statement of a revision (the node's `timeout`)
        self.scripts = ScriptGraph(name, url, script_location, shown=shown, python_path=python_path)
        # The one engine and connection of a run: the plan reads the heads on it and keeps it
        # (`current_heads(keep=True)`), the migration's session goes on with it and closes it.
        self._link: tuple[Engine, Connection] | None = None
        self.busy = threading.RLock()  # held by the session running on the link, on its thread

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

    def irreversible(self, revision: str) -> str | None:
        return self.scripts.irreversible(revision)

    def render(self, from_rev: str | None, to_rev: str | None) -> list[Rendered]:
        return render(self.scripts, from_rev, to_rev)

    def offline_sql(self, from_rev: str | None, to_rev: str | None) -> str:
        return offline_sql(self.scripts, from_rev, to_rev)

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
                f"{_scrub(reason(exc), self.url)}"
            ) from None  # the chained driver error may carry the password

    def exists(self) -> bool:
        """False only for a SQLite file that is not there yet (checked without creating it).

        Server databases are never created by the tool, so they count as existing; whether
        one is reachable is what current_heads() finds out.
        """
        path = self._sqlite_path()
        return path is None or path.exists()

    def connection(self) -> Connection:
        """The runner's connection, opened (with the statement bound, `_bound`) on first use or
        when the last one broke; it stays open until `close()`."""
        if self._link is not None and not (self._link[1].closed or self._link[1].invalidated):
            return self._link[1]
        self.close()
        path = self._sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = self._engine()
        try:
            conn = self._connect(engine)
        except BaseException:
            engine.dispose()
            raise
        self._link = (engine, conn)
        try:
            self._bound(conn, connected=True)
        except Exception as exc:
            self.close()
            raise StepFailed(f"database {self.name}: cannot set statement_timeout: "
                             f"{_scrub(reason(exc), self.url)}") from None
        return conn

    def close(self, *, if_idle: bool = False) -> None:
        """`if_idle`: not while a session uses the connection (a run whose loop was left with a
        revision still running, after a second interrupt): that session closes it as it ends."""
        if not self.busy.acquire(blocking=not if_idle):
            return
        try:
            link, self._link = self._link, None
            if link is not None:
                engine, conn = link
                try:
                    conn.close()
                finally:
                    engine.dispose()
        finally:
            self.busy.release()

    def current_heads(self, *, keep: bool = False) -> tuple[str, ...]:
        """The revisions the database is at; () when it has none (or its file does not exist).
        A connection this opens is closed again unless `keep`: the plan keeps it for the run."""
        if not self.exists():
            return ()  # connecting would create the file: plan must create nothing
        opened = self._link is None
        try:
            conn = self.connection()
            try:
                heads = MigrationContext.configure(conn).get_current_heads()
            except SQLAlchemyError as exc:
                keep = False  # it may be broken: whoever needs one next gets a new one
                raise StepFailed(
                    f"database {self.name} ({self.masked_url}): cannot read the Alembic "
                    f"version: {_scrub(reason(exc), self.url)}"
                ) from None
            conn.rollback()
            return tuple(sorted(heads))
        finally:
            if opened and not keep:
                self.close()

    def session(self, destination: str | None = None) -> Session:
        """`async with runner.session(target) as s: await s.apply(hop)`: every hop of a run on one
        connection and one env.py run, each in its own transaction (session.py)."""
        return Session(self, destination)

    def apply_hop(self, hop: Hop) -> tuple[str, ...]:
        """Run exactly one revision in its own transaction; return the heads after it."""
        return HopSession(self, hop.to_rev).run_all([(hop, False)])[0]

    def apply_hops(self, hops: list[Hop]) -> tuple[str, ...]:
        """Run the hops on one connection, each in its own transaction; the heads after the last.
        A failure is raised once the revisions before it are committed."""
        if not hops:
            return self.current_heads()
        return HopSession(self, hops[-1].to_rev if hops else None).run_all([(h, False) for h in hops])[-1]

    def _bound(self, conn: Connection, *, connected: bool = False) -> None:
        """Bound the revision's SQL by `timeout`: per statement on PostgreSQL (statement_timeout,
        set once when the connection is made: it is the tool's own connection), for the whole
        revision on SQLite (a progress handler, set when its transaction begins); the aborted
        statement rolls the revision back as any error does. A worker thread cannot be killed from
        outside, so the bound has to come from the database; Python code in a revision is not
        bounded."""
        if not self.timeout:
            return
        if conn.dialect.name == "postgresql":
            if connected:
                conn.exec_driver_sql(f"SET statement_timeout = {int(self.timeout * 1000)}")
                conn.commit()
        elif conn.dialect.name == "sqlite" and not connected:
            deadline = time.monotonic() + self.timeout
            conn.connection.driver_connection.set_progress_handler(
                lambda: 1 if time.monotonic() > deadline else 0, 10_000)
