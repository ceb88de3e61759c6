"""`release apply` and `release revert` of a long migration history against plain Alembic.

The history is tests/history.py's generated one (200 revisions by default: creates, renames,
drops, empty revisions, a merge point, a data migration) on a real PostgreSQL server started for
the run (tests/pgserver.py) or given with --url (a server URL whose user may create databases).
Every run gets a fresh database. Plain Alembic runs with `transaction_per_migration=True`, so both
commit each revision on its own.

In-process against in-process: every row runs in this one Python process, so none pays Python's
start-up or its imports (`release --version` starts in about 0.2 s; a `release` command imports
only what it uses). Each `release` command would be a process of its own, so scripts loaded by an
earlier row are forgotten before each run. Rows:

- alembic upgrade head: `alembic.command.upgrade(cfg, "head")`.
- release apply: `orchestrator.commands.apply` on a one-database project, as `release apply -y`
  runs it: manifests and scripts checked, the plan, the archive of the scripts, the journal (one
  durable write per revision: its intent, with the outcome of the revision before it; the last
  outcome on its own),
  the migration. "pg journal": the journal in a fresh database of the same server; "sqlite
  journal": the default, a fresh file with synchronous=FULL (an fsync per write). The journal's
  tables are created before the clock starts, as a project's first command left them: creating
  them runs the journal's own Alembic history, once in a project's life (about 0.03 s on SQLite,
  0.15 s on PostgreSQL), which --fresh-journal times too.
- release migrate only: the runner alone (`MigrationRunner.apply_hops`), no plan, no journal.
- alembic downgrade: from head down to the revision above the history's second irreversible one
  (plain Alembic cannot go below it either): `alembic.command.downgrade(cfg, REV)`.
- release revert: the same revisions down, `orchestrator.commands.revert` of a release that took
  the database from REV to head (the two applies before it are not timed).

The server runs as the tests start it (fsync off) unless --durable: then fsync and
synchronous_commit are on, so plain Alembic's commits wait for the disk as the journal's do.
--journal-latency MS adds MS milliseconds to every commit of the journal (not of the migrated
database): a journal on a server a network round trip away, or on a slow disk.
Prints the median of N runs of each (after one warm-up round), the ratio to plain Alembic going
the same way, and the load average before and after.

    python bench/bench_migrations.py [--runs 5] [--revisions 200] [--durable] [--fresh-journal]
                                     [--journal-latency MS] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import gc
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
from orchestrator.access import open_journal  # noqa: E402
from orchestrator.logs import configure  # noqa: E402
from orchestrator.migrations import MigrationRunner  # noqa: E402
from orchestrator.migrations import scripts as loaded_scripts  # noqa: E402
from pgserver import PgServer, find_bindir  # noqa: E402

# Alembic's own advice for PostgreSQL when every revision must stand on its own.
PER_MIGRATION = "context.configure(connection=connection, target_metadata=target_metadata)\n\n"


def start_server(durable: bool) -> tuple[PgServer, Path]:
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
    if durable:  # what a production server does; the tests' server skips it for speed
        with server.connect() as conn:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {setting} = on")
            conn.execute("SELECT pg_reload_conf()")
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


def journal_database(server_url: str) -> str:
    url = new_database(server_url)
    JOURNALS.add(sa.engine.make_url(url).database or "")
    return url


def alembic_config(location: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def timed(fn: Callable[[], object]) -> float:
    # Each `release` command (and each `alembic` one) would be a process of its own: no scripts
    # loaded by a run before.
    loaded_scripts._LOADED.clear()
    # Nor garbage of an earlier run: a full collection it would trigger would land in whichever
    # row runs next.
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def plain_upgrade(location: Path, url: str) -> float:
    return timed(lambda: command.upgrade(alembic_config(location, url), "head"))


def plain_downgrade(location: Path, url: str, to: str) -> float:
    cfg = alembic_config(location, url)
    command.upgrade(cfg, "head")
    return timed(lambda: command.downgrade(cfg, to))


def project(location: Path, url: str, work: Path, target: str | None = None) -> Path:
    root = Path(tempfile.mkdtemp(prefix="project-", dir=work))
    (root / "services.d").mkdir()
    (root / "services.d" / "hosts.yaml").write_text("hosts: {}\n")
    set_target(root, location, url, target)
    return root


def set_target(root: Path, location: Path, url: str, target: str | None) -> None:
    (root / "services.d" / "bench-db.yaml").write_text(
        f"name: bench-db\nkind: database\nurl: {url}\nmigrations: {location}\ntarget: {target or 'head'}\n")


FRESH_JOURNAL = False  # --fresh-journal: the apply creates the journal's tables, on the clock
LATENCY = 0.0  # --journal-latency
JOURNALS: set[str] = set()  # the journals' database names, whose commits --journal-latency slows


def slow_journal_commits(ms: float) -> None:
    def commit(conn: sa.Connection) -> None:
        db = conn.engine.url.database or ""
        if db in JOURNALS or db.endswith("/.release/journal.db"):
            time.sleep(ms / 1000)
    sa.event.listen(sa.Engine, "commit", commit)


def release_apply(location: Path, url: str, work: Path, journal: str | None = None) -> float:
    root = project(location, url, work)
    if not FRESH_JOURNAL:
        open_journal(root, journal, create=True).close()
    return timed(lambda: commands.apply(root, "bench", journal=journal))


def release_revert(location: Path, url: str, work: Path, to: str, journal: str | None = None) -> float:
    root = project(location, url, work, to)
    commands.apply(root, "before", journal=journal)
    set_target(root, location, url, None)
    commands.apply(root, "bench", journal=journal)
    return timed(lambda: commands.revert(root, journal=journal))


def release_migrate(location: Path, url: str) -> float:
    runner = MigrationRunner("bench-db", url, location)
    return timed(lambda: runner.apply_hops(runner.hops(None, runner.resolve_target("head"))))


def per_migration_env(location: Path) -> None:
    """Only the branch plain Alembic takes (no handed-over connection) gets the option."""
    env = location / "env.py"
    text = env.read_text()
    head, sep, tail = text.rpartition(PER_MIGRATION)
    assert sep, "env.py changed: cannot add transaction_per_migration"
    env.write_text(head + PER_MIGRATION.replace(
        "target_metadata)", "target_metadata,\n                          transaction_per_migration=True)") + tail)


def rows(location: Path, url: str, work: Path, down_to: str) -> dict[str, tuple[str, Callable[[str], float]]]:
    """name -> (the plain Alembic row it compares with, a run on a fresh database)."""
    up, down = "alembic upgrade head", "alembic downgrade"
    return {
        up: (up, lambda db: plain_upgrade(location, db)),
        "release apply, pg journal": (up, lambda db: release_apply(location, db, work, journal_database(url))),
        "release apply, sqlite journal": (up, lambda db: release_apply(location, db, work)),
        "release migrate only": (up, lambda db: release_migrate(location, db)),
        down: (down, lambda db: plain_downgrade(location, db, down_to)),
        "release revert, pg journal": (down, lambda db: release_revert(location, db, work, down_to,
                                                                       journal_database(url))),
        "release revert, sqlite journal": (down, lambda db: release_revert(location, db, work, down_to)),
    }


def measure(table: dict[str, tuple[str, Callable[[str], float]]], url: str, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in table}
    for i in range(runs + 1):  # the first round warms up (imports, caches) and is not counted
        names = list(table)
        names = names[i % len(names):] + names[:i % len(names)]  # interleaved, order rotating
        for name in names:
            t = table[name][1](new_database(url))
            if i:
                times[name].append(t)
    return times


def report(table: dict[str, tuple[str, Callable[[str], float]]], times: dict[str, list[float]],
           counts: dict[str, int], runs: int, durable: bool, load: tuple[float, float]) -> None:
    journal = "created on the clock" if FRESH_JOURNAL else "created before"
    if LATENCY:
        journal += f", {LATENCY:g} ms added to each of its commits"
    print(f"PostgreSQL ({'fsync on' if durable else 'fsync off, as the tests run it'}), in-process, "
          f"median of {runs} runs, fresh database each run (the apply's journal {journal}); "
          f"load average {load[0]:.2f} before, {load[1]:.2f} after")
    print(f"{'':32}{'revisions':>10}{'median s':>10}{'min s':>9}{'per rev ms':>12}{'ratio':>8}")
    for name, ts in times.items():
        base, n = table[name][0], counts[table[name][0]]
        med = statistics.median(ts)
        print(f"{name:32}{n:10}{med:10.3f}{min(ts):9.3f}{1000 * med / n:12.2f}"
              f"{med / statistics.median(times[base]):8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--revisions", type=int, default=200)
    ap.add_argument("--durable", action="store_true", help="turn fsync on in the server this starts")
    ap.add_argument("--url", help="a PostgreSQL server to create the databases on (default: start one)")
    ap.add_argument("--fresh-journal", action="store_true", help="time the creation of the apply's journal too")
    ap.add_argument("--journal-latency", type=float, default=0.0, metavar="MS",
                    help="add MS milliseconds to every commit of the journal")
    args = ap.parse_args()
    if args.journal_latency:
        slow_journal_commits(args.journal_latency)
    global FRESH_JOURNAL, LATENCY
    FRESH_JOURNAL = args.fresh_journal
    LATENCY = args.journal_latency
    configure(0, "console")  # as the CLI does: info lines on stderr, which cost time too

    server = base = None
    url = args.url
    if url is None:
        server, base = start_server(args.durable)
        url = server.url("postgres")
    work = Path(tempfile.mkdtemp(prefix="bench-migrations-"))
    load0 = os.getloadavg()[0]
    try:
        location = work / "migrations"
        history = write_history(location, "postgresql", count=args.revisions)
        per_migration_env(location)
        [noop] = [r for r in history.revisions if r.role == "pass"]  # the upper irreversible one
        table = rows(location, url, work, noop.id)
        times = measure(table, url, args.runs)
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    counts = {"alembic upgrade head": len(history.revisions),
              "alembic downgrade": len(history.revisions) - noop.index - 1}
    report(table, times, counts, args.runs, args.durable, (load0, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
