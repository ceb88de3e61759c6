"""A SQLite journal's engine: WAL with full synchronous writes and write-locking transactions
for a journal this process may write; plain reading transactions for one it may not (a read-only
`.release/`), so that status and history still read it. Its files are made private first
(`statedir`), and a failed write becomes one clear error (`writefail`)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from . import statedir, writefail


def sqlite_engine(url: str, *, create: bool) -> tuple[sa.Engine, bool] | None:
    """The engine, and whether this process may write the journal; None when the file does not
    exist and `create` is False."""
    path = sa.engine.make_url(url).database
    file = Path(path).absolute() if path and path != ":memory:" else None
    can_write = True
    if file is not None:
        if not file.exists() and not create:
            return None
        can_write = statedir.open_sqlite(file, create=create)
    args: dict[str, Any] = {"timeout": 60, "isolation_level": None}
    extra: dict[str, Any] = {}
    if file is not None and not can_write:
        uri = statedir.read_only_uri(file)
        extra["creator"] = lambda: sqlite3.connect(uri, uri=True, check_same_thread=False, **args)
    engine = sa.create_engine(url, connect_args=args, **extra)
    if file is not None:
        writefail.watch(engine, file)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        if can_write:
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        # IMMEDIATE takes the write lock up front, so two processes never interleave a
        # read-check-write such as taking the release lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if can_write else "BEGIN")

    return engine, can_write


WAL_SWITCH_WAIT = 60.0  # seconds, as long as any other journal write may wait for the lock


def use_wal(engine: sa.Engine) -> None:
    """Switch a SQLite journal to WAL once in its life. SQLite answers a switch that meets another
    connection's transaction with "database is locked" at once, without its busy wait (two first
    runs at once on a fresh journal), so wait here as any other write would."""
    deadline = time.monotonic() + WAL_SWITCH_WAIT
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        raw.close()
