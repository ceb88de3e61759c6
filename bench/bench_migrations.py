"""`release apply` of a long migration history against plain `alembic upgrade head`.

The history is tests/history.py's generated one (160 revisions by default: creates, renames,
drops, empty revisions, a merge point, a data migration) on a real PostgreSQL server started for
the run (tests/pgserver.py) or given with --url (a server URL whose user may create databases).
Every run gets a fresh database. Plain Alembic runs with `transaction_per_migration=True`, so both
commit each revision on its own; everything runs in this process, so neither pays Python's
start-up. Rows:

- alembic upgrade head: `alembic.command.upgrade(cfg, "head")`.
- release apply: `orchestrator.commands.apply` on a one-database project, as `release apply -y`
  runs it: manifests and scripts checked, the plan, the archive of the scripts, the journal (two
  durable writes per revision: intent and outcome), the migration. "pg journal": the journal in
  a database of the same server; "sqlite journal": the default, a file with synchronous=FULL (one
  fsync per write).
- release migrate only: the runner alone (`MigrationRunner.apply_hops`), no plan, no journal.

Prints the median of N runs of each and the ratio to plain Alembic.

    python bench/bench_migrations.py [--runs 5] [--revisions 160] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

from history import write_history  # noqa: E402
from orchestrator import commands  # noqa: E402
from orchestrator.logs import configure  # noqa: E402
from orchestrator.migrations import MigrationRunner  # noqa: E402
from orchestrator.migrations import scripts as loaded_scripts  # noqa: E402
from pgserver import PgServer, find_bindir  # noqa: E402

# Alembic's own advice for PostgreSQL when every revision must stand on its own.
PER_MIGRATION = "context.configure(connection=connection, target_metadata=target_metadata)\n\n"


def start_server() -> tuple[PgServer, Path]:
    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries (set PG_BINDIR, or pass --url)")
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        user = "postgres"
        ent = pwd.getpwnam(user)
        os.chown(base, ent.pw_uid, ent.pw_gid)
    server = PgServer(bindir=bindir, base=base, user=user)
    server.init()
    server.start()
    return server, base


def new_database(server_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def plain_alembic(location: Path, url: str) -> float:
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    t0 = time.perf_counter()
    command.upgrade(cfg, "head")
    return time.perf_counter() - t0


def release_apply(location: Path, url: str, work: Path, journal: str | None = None) -> float:
    root = Path(tempfile.mkdtemp(prefix="project-", dir=work))
    (root / "services.d").mkdir()
    (root / "services.d" / "hosts.yaml").write_text("hosts: {}\n")
    (root / "services.d" / "bench-db.yaml").write_text(
        f"name: bench-db\nkind: database\nurl: {url}\nmigrations: {location}\n")
    t0 = time.perf_counter()
    commands.apply(root, "bench", journal=journal)
    return time.perf_counter() - t0


def release_migrate(location: Path, url: str) -> float:
    runner = MigrationRunner("bench-db", url, location)
    t0 = time.perf_counter()
    runner.apply_hops(runner.hops(None, runner.resolve_target("head")))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--revisions", type=int, default=160)
    ap.add_argument("--url", help="a PostgreSQL server to create the databases on (default: start one)")
    args = ap.parse_args()
    configure(0, "console")  # as the CLI does: info lines on stderr, which cost time too

    server = base = None
    url = args.url
    if url is None:
        server, base = start_server()
        url = server.url("postgres")
    work = Path(tempfile.mkdtemp(prefix="bench-migrations-"))
    try:
        location = work / "migrations"
        history = write_history(location, "postgresql", count=args.revisions)
        env = location / "env.py"
        # Only the branch plain Alembic takes (no handed-over connection) gets the option.
        text = env.read_text()
        head, sep, tail = text.rpartition(PER_MIGRATION)
        assert sep, "env.py changed: cannot add transaction_per_migration"
        env.write_text(head + PER_MIGRATION.replace(
            "target_metadata)", "target_metadata,\n                          transaction_per_migration=True)") + tail)

        rows: dict[str, Callable[[str], float]] = {
            "alembic upgrade head": lambda db: plain_alembic(location, db),
            "release apply, pg journal": lambda db: release_apply(location, db, work, new_database(url)),
            "release apply, sqlite journal": lambda db: release_apply(location, db, work),
            "release migrate only": lambda db: release_migrate(location, db),
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.runs):
            for name, fn in rows.items():  # interleaved, so that drift in the machine hits all
                # Each `release` command is a process of its own: no scripts loaded by a run before.
                loaded_scripts._LOADED.clear()
                times[name].append(fn(new_database(url)))
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    baseline = statistics.median(times["alembic upgrade head"])
    print(f"{len(history.revisions)} revisions on PostgreSQL, median of {args.runs} runs, fresh database each run")
    print(f"{'':24}{'median s':>10}{'min s':>9}{'per rev ms':>12}{'ratio':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:24}{med:10.3f}{min(ts):9.3f}{1000 * med / len(history.revisions):12.2f}"
              f"{med / baseline:8.2f}")


if __name__ == "__main__":
    main()
