"""Alembic, driven in-process: one database, one revision, one transaction at a time (SPEC §2).

The runner builds a programmatic Alembic configuration (no alembic.ini), opens the connection
itself and hands it to env.py through `config.attributes["connection"]`. Every revision runs in
its own transaction that is committed only when the revision succeeded, so a release that fails
half-way leaves each database at the last revision that worked, and the journal can say which.

The runner is synchronous; the executor calls it through `in_worker`, on one worker thread.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, quote_plus

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationStep
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from ..errors import InputError, StepFailed
from ..logs import get_logger
from ..secrets import mask_url
from .risks import risks


T = TypeVar("T")

# Alembic keeps the running EnvironmentContext in module-global proxies (`alembic.context`,
# `alembic.op`): two env.py runs in parallel threads would overwrite each other's context.
# The executor already migrates one database at a time; this lock makes that a guarantee.
_ALEMBIC_LOCK = threading.RLock()

Direction = Literal["up", "down"]
_VERB = {"up": "upgrade", "down": "downgrade"}

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PG_DRIVERS = {"postgres", "postgresql", "postgresql+psycopg"}
_CONNECT_TIMEOUT = 10  # seconds; an unreachable server should fail a step, not hang it


@dataclass(frozen=True)
class Hop:
    """One revision applied (`direction` "up") or undone ("down").

    `from_rev`/`to_rev` are the database's revision before and after the hop (None = base;
    a merge revision's several parents are joined with ",").
    """

    from_rev: str | None
    to_rev: str | None
    revision: str
    direction: Direction


# --------------------------------------------------------------------------- URLs


def resolve_url(url: str, project_root: Path, *, node: str | None = None) -> str:
    """The SQLAlchemy URL the runner connects to: variables substituted, paths anchored, driver fixed.

    `${VAR}` comes from the environment; a relative sqlite path is relative to `project_root`
    (not to whatever directory the tool was started from); `postgresql://` means psycopg 3.
    """
    where = f"database {node}: " if node else ""
    missing = sorted({m.group(1) for m in _VAR_RE.finditer(url) if m.group(1) not in os.environ})
    if missing:
        raise InputError(
            f"{where}url: environment variable{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} not set"
        )
    url = _VAR_RE.sub(lambda m: os.environ[m.group(1)], url)
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


def _sqlite_file(database: str | None) -> str | None:
    """The file behind a sqlite URL's database part, or None for in-memory/URI databases."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def _scrub(text: str, url: str) -> str:
    """Remove a URL's password from a driver's message, in every spelling it may take there."""
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        for form in {str(password), quote(str(password), safe=""), quote_plus(str(password))}:
            if form:
                text = text.replace(form, "***")
    return re.sub(r"(://[^/@:\s]*:)[^@/\s]*@", r"\1***@", text)


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


@contextmanager
def _no_bytecode() -> Iterator[None]:
    # Loading revision scripts would write __pycache__ into the release repository (or into a
    # restored journal copy); `plan` must leave the repository as it found it.
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


# ----------------------------------------------------------------------------- runner


class _NotAtExpectedRevision(Exception):
    pass


class MigrationRunner:
    """Alembic operations on one database node (`url` already resolved by `resolve_url`)."""

    def __init__(self, name: str, url: str, script_location: Path, timeout: float | None = None) -> None:
        self.name = name
        self.url = url
        self.script_location = Path(script_location).absolute()
        self.timeout = timeout  # seconds per SQL statement of a revision (the node's `timeout`)
        self._script_dir: ScriptDirectory | None = None

    def __repr__(self) -> str:
        return f"MigrationRunner({self.name!r}, {mask_url(self.url)!r}, {str(self.script_location)!r})"

    @property
    def dialect(self) -> str:
        """The backend name (`sqlite`, `postgresql`, ...), as `risks()` takes it."""
        return make_url(self.url).get_backend_name()

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    # ------------------------------------------------------------ scripts

    def _where(self) -> str:
        return f"database {self.name}: migrations {self.script_location}"

    def _config(self, **kwargs: object) -> Config:
        cfg = Config(**kwargs)  # type: ignore[arg-type]
        cfg.set_main_option("script_location", str(self.script_location))
        cfg.set_main_option("path_separator", "os")
        # ConfigParser interpolates "%": a URL-encoded password would otherwise break it.
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def _script(self) -> ScriptDirectory:
        if self._script_dir is None:
            loc = self.script_location
            if not loc.is_dir():
                raise InputError(f"{self._where()}: no such directory")
            if not (loc / "env.py").is_file():
                raise InputError(f"{self._where()}: not an Alembic script directory (no env.py)")
            if not (loc / "versions").is_dir():
                raise InputError(f"{self._where()}: not an Alembic script directory (no versions/)")
            try:
                with _ALEMBIC_LOCK, _no_bytecode():
                    script = ScriptDirectory.from_config(self._config())
                    script.get_heads()  # loads every revision file: surface their errors now
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"{self._where()}: cannot load the revisions: {exc}") from exc
            self._script_dir = script
        return self._script_dir

    def _get(self, revision: str) -> Script:
        script = self._script()
        try:
            rev = script.get_revision(revision)
        except CommandError:
            rev = None
        if rev is None or rev.revision != revision:
            raise InputError(f"{self._where()}: unknown revision {revision!r}")
        return rev

    def _known(self, revision: str) -> bool:
        try:
            rev = self._script().get_revision(revision)
        except CommandError:
            return False
        return rev is not None and rev.revision == revision

    def _require_known(self, revisions: Iterable[str]) -> None:
        unknown = [r for r in revisions if not self._known(r)]
        if unknown:
            raise InputError(
                f"{self._where()}: unknown revision{'s' if len(unknown) > 1 else ''} "
                + ", ".join(repr(r) for r in unknown)
                + " (the database or target names revisions these scripts do not have)"
            )

    def _downs(self, revision: str) -> tuple[str, ...]:
        down = self._get(revision).down_revision
        if down is None:
            return ()
        return (down,) if isinstance(down, str) else tuple(down)

    def _closure(self, revisions: Iterable[str]) -> set[str]:
        """The revisions and all their ancestors: what a database at those heads has applied."""
        seen: set[str] = set()
        stack = list(revisions)
        while stack:
            rev = stack.pop()
            if rev not in seen:
                seen.add(rev)
                stack.extend(self._downs(rev))
        return seen

    def _topological(self, revisions: set[str]) -> list[str]:
        """Parents before children; ties by id so that the order is stable."""
        order: list[str] = []
        pending = {r: {d for d in self._downs(r) if d in revisions} for r in revisions}
        while pending:
            ready = sorted(r for r, deps in pending.items() if not deps)
            if not ready:
                raise InputError(f"{self._where()}: revisions form a cycle: {', '.join(sorted(pending))}")
            for r in ready:
                del pending[r]
                for deps in pending.values():
                    deps.discard(r)
            order.extend(ready)
        return order

    def check_scripts(self, target: str = "head") -> None:
        """Raise InputError unless this is a loadable Alembic script directory for `target`."""
        script = self._script()
        heads = script.get_heads()
        if not heads:
            raise InputError(f"{self._where()}: the script directory has no revisions")
        self.resolve_target(target)

    def resolve_target(self, target: str = "head") -> str | None:
        """The revision id a manifest's `target` means; None for `base`."""
        script = self._script()
        if target in ("head", "heads"):
            heads = script.get_heads()
            if len(heads) > 1:
                raise InputError(
                    f"{self._where()}: multiple heads ({', '.join(sorted(heads))}); merge them "
                    "(alembic merge) or set `target` to one revision"
                )
            if not heads:
                raise InputError(f"{self._where()}: the script directory has no revisions")
            return heads[0]
        if target == "base":
            return None
        try:
            rev = script.get_revision(target)
        except CommandError as exc:
            raise InputError(f"{self._where()}: target: unknown revision {target!r} ({exc})") from exc
        if rev is None:
            raise InputError(f"{self._where()}: target: unknown revision {target!r}")
        return rev.revision

    def hops(self, from_rev: str | None, to_rev: str | None) -> list[Hop]:
        """The single-revision steps from `from_rev` to `to_rev` (None = base), in execution order.

        Undoes what `from_rev` has and `to_rev` lacks (newest first), then applies what
        `to_rev` has and `from_rev` lacks (oldest first); on one line of history one of the
        two is empty.
        """
        start = _split(from_rev)
        goal = _split(to_rev)
        self._require_known([*start, *goal])
        have = self._closure(start)
        want = self._closure(goal)
        out: list[Hop] = []
        for rev in reversed(self._topological(have - want)):
            out.append(Hop(rev, _join(self._downs(rev)), rev, "down"))
        for rev in self._topological(want - have):
            out.append(Hop(_join(self._downs(rev)), rev, rev, "up"))
        return out

    def is_reversible(self, revision: str) -> bool:
        """Whether the revision has a downgrade() that does something and does not always raise.

        Static: the module source is parsed, never run, so a plan can tell before anything runs.
        """
        path = Path(self._get(revision).path)
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (OSError, SyntaxError):
            return False
        func = None
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "downgrade":
                func = node  # a later definition wins, as at import time
        if func is None:
            return False
        body = list(func.body)
        if body and _is_docstring(body[0]):
            body = body[1:]
        body = [s for s in body if not _is_noop(s)]
        if not body:
            return False
        return not any(isinstance(s, ast.Raise) for s in body)

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
        unknown = [h for h in heads if not self._known(h)]
        if unknown:
            raise _NotAtExpectedRevision(
                f"the database is at {_fmt(heads)}, which these scripts do not know"
            )
        applied = self._closure(heads)
        if hop.direction == "up":
            ok = hop.revision not in applied and all(d in applied for d in self._downs(hop.revision))
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
        script = self._script()
        rev = self._get(hop.revision)
        if hop.direction == "up":
            step = MigrationStep.upgrade_from_script(script.revision_map, rev)
        else:
            step = MigrationStep.downgrade_from_script(script.revision_map, rev)
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
                    cfg = self._config(attributes={"connection": conn})
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

    def risks(self, sql: str, dialect: str | None = None) -> list[str]:
        """`risks()` for this database's dialect."""
        return risks(sql, dialect or self.dialect)

    # ------------------------------------------------------------ offline

    def offline_sql(self, from_rev: str | None, to_rev: str | None) -> str:
        """The SQL that Alembic's offline mode (`--sql`) emits for these hops; never connects."""
        hops = self.hops(from_rev, to_rev)
        if not hops:
            return ""
        script = self._script()
        steps = [
            MigrationStep.upgrade_from_script(script.revision_map, self._get(h.revision))
            if h.direction == "up"
            else MigrationStep.downgrade_from_script(script.revision_map, self._get(h.revision))
            for h in hops
        ]
        buf = io.StringIO()
        cfg = self._config(output_buffer=buf)
        try:
            with _ALEMBIC_LOCK, _no_bytecode():
                with EnvironmentContext(
                    cfg, script, fn=lambda heads, context: steps, as_sql=True,
                    starting_rev=list(_split(from_rev)) or None, destination_rev=to_rev,
                ):
                    script.run_env()
        except Exception as exc:
            raise InputError(
                f"{self._where()}: cannot render the SQL for {from_rev or 'base'} -> "
                f"{to_rev or 'base'}: {_scrub(str(exc), self.url)}"
            ) from None
        return buf.getvalue()


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


# ------------------------------------------------------------------------------ helpers


def _split(rev: str | None) -> tuple[str, ...]:
    if not rev:
        return ()
    return tuple(r.strip() for r in rev.split(",") if r.strip())


def _join(revs: tuple[str, ...]) -> str | None:
    return ",".join(revs) if revs else None


def _fmt(heads: tuple[str, ...]) -> str:
    return ", ".join(heads) if heads else "base (no revision)"


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_noop(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)  # `...`, stray strings
