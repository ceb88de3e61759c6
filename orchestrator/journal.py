"""The release journal: every step written before it runs (intent) and when it ends (outcome).

SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) or PostgreSQL (one transaction per record). The
tables and their versioning (the orchestrator's own Alembic scripts) are `journal_schema`'s. A
journal may hold several projects; a `Journal` is one project's view of it. This module stores
and reads records; what they mean is `lifecycle`'s, the lock is `lock`'s.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .journal_sqlite import sqlite_engine, use_wal
from .errors import InputError, JournalError, ReleaseError
from .journal_schema import (DROP_VERSION, FINISH_STEP, INSERT_STEP, INSERT_VERSION, UNCLAIMED, adopt_unclaimed, archives,
                             current_versions, events, prepare, releases, steps)
from .lifecycle import Outcome, Release, ReleaseState
from .lock import PID_NS, ReleaseLock, holder_gone, process_start
from .secrets import mask_text, mask_url


@dataclass(frozen=True)
class Step:
    id: int
    release_id: int
    phase: str
    node: str
    kind: str
    host: str | None
    action: str
    revision: str | None
    before: str | None
    after: str | None
    status: str
    exit_code: int | None
    stdout: str | None
    stderr: str | None
    detail: str | None
    started_at: float
    ended_at: float | None

    @property
    def in_doubt(self) -> bool:
        return self.status == Outcome.INTENT


def default_url(project_root: Path) -> str:
    return f"sqlite:///{project_root / '.release' / 'journal.db'}"


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://"):]
    return url


class Journal:
    """One project's view of a journal database. Build with `Journal.open`; read-only callers
    pass create=False.

    Every read and write is the project's own: its releases (and through them their steps and
    archives), current versions, events and lock. Opened without a project (None), it reads
    every project's records: for looking into a journal, never for running a release.
    """

    def __init__(self, engine: sa.Engine, url: str, project: str | None = None) -> None:
        self.engine = engine
        self.url = url
        self.project = project
        self.owner = UNCLAIMED if project is None else project  # what this view writes
        self.hostname = socket.gethostname()
        self.lock = ReleaseLock(engine, self.owner)

    def _mine(self, table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.true() if self.project is None else table.c.project == self.project

    def _my_steps(self) -> sa.ColumnElement[bool]:
        return steps.c.release_id.in_(sa.select(releases.c.id).where(self._mine(releases)))

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, create: bool, project: str | None = None) -> "Journal | None":
        """`project`'s journal at `url`; None when it does not exist and `create` is False (plan,
        status). Records from before projects become those of the first project to open it."""
        url = normalise_url(url)
        try:
            parsed = sa.engine.make_url(url)
            dialect, driver = parsed.get_backend_name(), parsed.get_driver_name()
        except sa.exc.ArgumentError:
            dialect = driver = None
        if (dialect, driver) not in (("sqlite", "pysqlite"), ("postgresql", "psycopg")):
            raise InputError(f"journal URL {mask_url(url)}: not supported; use sqlite:///PATH or "
                             "postgresql+psycopg://USER@HOST/DB")
        is_sqlite = dialect == "sqlite"
        can_write = True
        if is_sqlite:
            opened = sqlite_engine(url, create=create)
            if opened is None:
                return None
            engine, can_write = opened
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
        journal = cls(engine, url, project)
        try:
            prepare(engine, url, create=create)
        except JournalError:
            engine.dispose()
            raise
        except sa.exc.OperationalError as exc:
            engine.dispose()
            # Not invalid input: the journal is out of reach (exit 1), as an unreachable host is.
            raise ReleaseError(f"journal {mask_url(url)}: cannot be opened: {mask_text(str(exc.orig))}") from None
        except sa.exc.DatabaseError as exc:
            engine.dispose()
            raise JournalError(f"journal {mask_url(url)}: is not a journal database: {exc.orig}") from None
        if not create and not journal._has_schema():
            engine.dispose()
            return None
        if project is not None:
            adopt_unclaimed(engine, project)
        if is_sqlite and can_write:
            # Only now that the file is known to be a journal: WAL mode is persistent, and a
            # database that is not ours (a mistyped --journal) must be left as it was.
            use_wal(engine)
        return journal

    def _has_schema(self) -> bool:
        return sa.inspect(self.engine).has_table("releases")

    def close(self) -> None:
        self.lock.close()
        self.engine.dispose()

    # -- releases ----------------------------------------------------------------------------

    def _release(self, row: Any, steps_run: int = 0) -> Release:
        return Release(
            id=row.id, name=row.name, stored_state=row.state, stored_revert_state=row.revert_state,
            previous=row.previous, started_at=row.started_at, finished_at=row.finished_at,
            hostname=row.hostname, pid=row.pid, proc_start=row.proc_start,
            manifests=json.loads(row.manifests or "{}"), message=row.message,
            holder_gone=holder_gone(row.hostname, row.pid, row.proc_start, row.pid_ns), steps_run=steps_run,
        )

    def releases(self, limit: int | None = None) -> list[Release]:
        q = sa.select(releases).where(self._mine(releases)).order_by(releases.c.id.desc())
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [self._release(r) for r in conn.execute(q)]

    def latest(self) -> Release | None:
        """The newest record, with the number of its apply steps that started."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(releases).where(self._mine(releases))
                               .order_by(releases.c.id.desc()).limit(1)).first()
            if row is None:
                return None
            run = conn.execute(sa.select(sa.func.count()).select_from(steps).where(
                (steps.c.release_id == row.id) & (steps.c.phase == "apply")
                & (steps.c.status != Outcome.SKIPPED))).scalar()
        return self._release(row, int(run or 0))

    def get(self, release_id: int) -> Release:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(releases).where((releases.c.id == release_id)
                                                         & self._mine(releases))).one()
        return self._release(row)

    def last_applied_name(self) -> str | None:
        """The newest release whose changes are in place (applied, not reverted)."""
        for r in self.releases():
            if r.state == ReleaseState.APPLIED:
                return r.name
        return None

    def begin_release(self, name: str, previous: str | None, manifests: dict[str, Any]) -> int:
        pid = os.getpid()
        with self.engine.begin() as conn:
            res = conn.execute(releases.insert().values(
                project=self.owner, name=name, state=ReleaseState.IN_PROGRESS, previous=previous,
                started_at=time.time(), hostname=self.hostname, pid=pid, proc_start=process_start(pid),
                pid_ns=PID_NS, manifests=json.dumps(manifests),
            ))
            return int(res.inserted_primary_key[0])

    def claim_release(self, release_id: int, manifests: dict[str, Any] | None = None) -> None:
        """A resumed apply or a revert: this process now owns the record. A resumed apply also
        replaces the journaled manifests (the caller merges both attempts' copies)."""
        pid = os.getpid()
        values: dict[str, Any] = {"hostname": self.hostname, "pid": pid, "proc_start": process_start(pid),
                                  "pid_ns": PID_NS}
        if manifests is not None:
            values["manifests"] = json.dumps(manifests)
        with self.engine.begin() as conn:
            conn.execute(releases.update().where(releases.c.id == release_id).values(**values))

    def set_state(self, release_id: int, state: str | None = None, *, revert_state: str | None = None,
                  message: str | None = None, clear_revert: bool = False) -> None:
        values: dict[str, Any] = {"finished_at": time.time()}
        if state is not None:
            values["state"] = state
        if revert_state is not None:
            values["revert_state"] = revert_state
        if clear_revert:
            values["revert_state"] = None
        if message is not None:
            values["message"] = mask_text(message)
        with self.engine.begin() as conn:
            conn.execute(releases.update().where(releases.c.id == release_id).values(**values))

    def add_event(self, event: str, detail: str, release_id: int | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(events.insert().values(ts=time.time(), project=self.owner, release_id=release_id, event=event,
                                                detail=mask_text(detail)))

    def events(self, release_id: int | None = None) -> list[tuple[str, str]]:
        q = sa.select(events.c.event, events.c.detail).where(self._mine(events)).order_by(events.c.id)
        if release_id is not None:
            q = q.where(events.c.release_id == release_id)
        with self.engine.connect() as conn:
            return [(r.event, r.detail) for r in conn.execute(q)]

    # -- steps -------------------------------------------------------------------------------

    def intent(self, release_id: int, *, phase: str, node: str, kind: str, action: str,
               host: str | None = None, revision: str | None = None,
               before: str | None = None, after: str | None = None) -> int:
        """Committed before the step runs: after a crash, this row says the step may have happened."""
        with self.engine.begin() as conn:
            return self.write_intent(conn, release_id, phase=phase, node=node, kind=kind, action=action,
                                     host=host, revision=revision, before=before, after=after)

    def write_intent(self, conn: sa.Connection, release_id: int, **fields: Any) -> int:
        """`intent` inside the caller's transaction (a group commit of several steps')."""
        res = conn.execute(INSERT_STEP, {"release_id": release_id, "status": Outcome.INTENT,
                                         "started_at": time.time(), **fields})
        return int(res.inserted_primary_key[0])

    def outcome(self, step_id: int, status: str, *, exit_code: int | None = None, stdout: str = "",
                stderr: str = "", detail: str | None = None, in_place: tuple[str, str, str | None] | None = None,
                release_id: int | None = None) -> None:
        """The step's end; `in_place` (node, host, version) updates what is deployed, atomically."""
        with self.engine.begin() as conn:
            self.write_outcome(conn, step_id, status, exit_code=exit_code, stdout=stdout, stderr=stderr,
                               detail=detail, in_place=in_place, release_id=release_id)

    def write_outcome(self, conn: sa.Connection, step_id: int, status: str, *, exit_code: int | None = None,
                      stdout: str = "", stderr: str = "", detail: str | None = None,
                      in_place: tuple[str, str, str | None] | None = None, release_id: int | None = None) -> None:
        """`outcome` inside the caller's transaction (a group commit of several steps')."""
        conn.execute(FINISH_STEP, {
            "step_id": step_id, "status": status, "exit_code": exit_code, "stdout": mask_text(stdout),
            "stderr": mask_text(stderr), "detail": mask_text(detail) if detail else detail, "ended_at": time.time()})
        if in_place is not None:
            node, host, version = in_place
            conn.execute(DROP_VERSION, {"v_project": self.owner, "v_node": node, "v_host": host})
            if version is not None:
                conn.execute(INSERT_VERSION, {"project": self.owner, "node": node, "host": host, "version": version,
                                              "release_id": release_id})

    def steps(self, release_id: int, phase: str | None = None) -> list[Step]:
        q = sa.select(steps).where(steps.c.release_id == release_id).order_by(steps.c.id)
        if phase:
            q = q.where(steps.c.phase == phase)
        with self.engine.connect() as conn:
            return [Step(**r._mapping) for r in conn.execute(q)]

    def in_doubt_hosts(self) -> set[tuple[str, str]]:
        """(service, host) whose newest step that ran did not end well: in doubt (a crash left it
        unknown whether that deploy or revert ran) or failed (a command may fail after it switched
        the host). `current_versions` only moves on success, so it cannot be trusted there.
        Skipped steps never ran and do not count."""
        newest = (sa.select(sa.func.max(steps.c.id).label("id"))
                  .where((steps.c.kind == "service") & (steps.c.status != Outcome.SKIPPED) & self._my_steps())
                  .group_by(steps.c.node, steps.c.host).subquery())
        q = sa.select(steps.c.node, steps.c.host).join(newest, steps.c.id == newest.c.id).where(
            steps.c.status.in_([Outcome.INTENT, Outcome.FAILED]))
        with self.engine.connect() as conn:
            return {(r.node, r.host) for r in conn.execute(q)}

    def expected_revisions(self) -> dict[str, set[str | None]]:
        """Per database, the revisions the journal allows it to be at now (for drift checks).

        The newest database step decides: done -> its `after`; failed -> its `before`; in doubt
        (intent, no outcome) -> either.
        """
        out: dict[str, set[str | None]] = {}
        q = sa.select(steps).where((steps.c.kind == "database") & self._my_steps()).order_by(steps.c.id.desc())
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                if r.node in out:
                    continue
                if r.status == Outcome.OK:
                    out[r.node] = {r.after}
                elif r.status in (Outcome.FAILED, Outcome.SKIPPED):
                    out[r.node] = {r.before}
                else:
                    out[r.node] = {r.before, r.after}
        return out

    def recorded_revisions(self) -> dict[str, tuple[str | None, bool]]:
        """Per database, the revision the journal last saw it at, and whether that is in doubt
        (the newest step has an intent and no outcome: it may or may not have committed)."""
        return {node: (sorted(revs, key=str)[0] if len(revs) == 1 else self._before(node), len(revs) > 1)
                for node, revs in self.expected_revisions().items()}

    def _before(self, node: str) -> str | None:
        q = (sa.select(steps.c.before).where((steps.c.kind == "database") & (steps.c.node == node) & self._my_steps())
             .order_by(steps.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def resolve_database(self, node: str, at: str | None) -> None:
        """A database's newest step in doubt (its process died between commit and outcome) is
        decided by where the database is now: at its `after`, it ran; at its `before`, its
        transaction never committed."""
        q = (sa.select(steps).where((steps.c.kind == "database") & (steps.c.node == node) & self._my_steps())
             .order_by(steps.c.id.desc()).limit(1))
        with self.engine.begin() as conn:
            row = conn.execute(q).first()
            if row is None or row.status != Outcome.INTENT or at not in (row.before, row.after):
                return
            done = at == row.after and row.after != row.before
            conn.execute(steps.update().where(steps.c.id == row.id).values(
                status=Outcome.OK if done else Outcome.FAILED, ended_at=time.time(),
                detail=f"in doubt until the database was read: it is at {at or 'base'}"))

    def _version_key(self, node: str, host: str) -> sa.ColumnElement[bool]:
        return ((current_versions.c.project == self.owner) & (current_versions.c.node == node)
                & (current_versions.c.host == host))

    def current_versions(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(current_versions).where(self._mine(current_versions))):
                out.setdefault(r.node, {})[r.host] = r.version
        return out

    def reconcile(self, live: dict[str, dict[str, str | None]]) -> list[str]:
        """Make what the journal says runs on each probed host what the host reported (the hosts
        are the truth, the journal our memory); returns each correction, for the log."""
        known = self.current_versions()
        fixed = []
        with self.engine.begin() as conn:
            for node, hosts in live.items():
                for host, version in hosts.items():
                    was = known.get(node, {}).get(host)
                    if was == version:
                        continue
                    conn.execute(current_versions.delete().where(self._version_key(node, host)))
                    if version is not None:
                        conn.execute(current_versions.insert().values(project=self.owner, node=node, host=host,
                                                                      version=version))
                    fixed.append(f"{node}@{host}: journal said {was or 'nothing'}, the host reports "
                                 f"{version or 'nothing'}")
        return fixed

    def archive(self, release_id: int, node: str, files: dict[str, str]) -> None:
        """Keep a database's migration scripts with the release (replacing an earlier copy)."""
        key = (archives.c.release_id == release_id) & (archives.c.node == node)
        with self.engine.begin() as conn:
            conn.execute(archives.delete().where(key))
            conn.execute(archives.insert().values(release_id=release_id, node=node, files=json.dumps(files)))

    def archived(self, release_id: int, node: str) -> dict[str, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(archives.c.files).where(
                (archives.c.release_id == release_id) & (archives.c.node == node))).first()
        return json.loads(row.files) if row else None
