"""Opening a new journal: created at the newest schema revision, and safely while another first
run is writing to it."""

import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator import journal_schema
from orchestrator.journal import Journal
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


def _described(url: str) -> dict:
    """Everything of a database's schema a journal migration could depend on, and its version."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            out: dict = {"version": conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()}
            for t in insp.get_table_names():
                out[t] = {
                    "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in insp.get_columns(t)],
                    "pk": insp.get_pk_constraint(t),
                    "fks": sorted(str(fk) for fk in insp.get_foreign_keys(t)),
                    "indexes": sorted(str(ix) for ix in insp.get_indexes(t)),
                    "unique": sorted(str(u) for u in insp.get_unique_constraints(t)),
                }
            if conn.dialect.name == "sqlite":
                out["sql"] = {name: " ".join(sql.replace('"', "").split()) for name, sql in conn.execute(
                    sa.text("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))}
    finally:
        engine.dispose()
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_empty_databases(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new.db'}", f"sqlite:///{tmp_path / 'migrated.db'}"
    pg = request.getfixturevalue("pg")
    return tuple(pg.create_database(f"j_{uuid.uuid4().hex[:12]}_{which}") for which in ("new", "migrated"))


def test_a_new_journal_is_exactly_what_its_migration_scripts_build(two_empty_databases: tuple[str, str]) -> None:
    # A new journal is created from the code's tables, without running Alembic; an older one is
    # upgraded by the scripts. Both must be the same schema, or the next script breaks one of them.
    new, migrated = two_empty_databases
    Journal.open(new, create=True, project="p").close()
    engine = sa.create_engine(migrated)
    try:
        journal_schema._upgrade(engine)
    finally:
        engine.dispose()
    assert _described(new) == _described(migrated)
    assert _described(new)["version"] == [(journal_schema.HEAD,)]
