"""Opening a fresh SQLite journal while another first run is writing to it."""

import sqlite3
import threading
from pathlib import Path

import sqlalchemy as sa

from orchestrator.journal_sqlite import use_wal


def test_wal_switch_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    # Two first runs at once: one is mid-write (SQLite's RESERVED lock) when the other switches
    # the new journal to WAL. SQLite refuses that switch at once, without its busy wait; before
    # the wait, the second run died with "internal error: database is locked".
    path = tmp_path / "journal.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    done = threading.Timer(0.3, writer.execute, args=("COMMIT",))
    done.start()
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        use_wal(engine)
    finally:
        done.join()
        engine.dispose()
    reader = sqlite3.connect(path)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]
