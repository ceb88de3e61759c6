"""A long, realistic history (tests/history.py) through the CLI, against plain Alembic.

Each test builds a release repository with one database node whose script directory is a
generated history of 160 revisions (creates, renames, drops, empty revisions, a merge point, a
data migration, two irreversible revisions), on SQLite and on a real PostgreSQL (`pg` fixture).
The reference is Alembic itself (`alembic.command`) run on a second database with the same
scripts: the tool must leave exactly the schema that `alembic upgrade`/`downgrade` leave.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from helpers import cli, journal_rows
from history import History, write_history
from pgserver import PgServer

pytestmark = pytest.mark.e2e  # release runs as a process of its own

DB = "hist-db"


@dataclass
class Repo:
    """A release repository whose one database is `hist-db`, and a plain-Alembic twin of it."""

    root: Path
    history: History
    url: str  # what the tool migrates
    plain: str  # what plain Alembic migrates, for comparison
    pg: PgServer | None = None
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, check: int | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        return cli(*args, cwd=self.root, env={**self.env, **(env or {})}, check=check, timeout=300)

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--json", check=0).stdout)

    def manifest(self, target: str | None = None, extra: str = "") -> None:
        text = f"name: {DB}\nkind: database\nurl: {self.url}\nmigrations: migrations/hist\n{extra}"
        if target:
            text += f"target: {target}\n"
        (self.root / "services.d" / f"{DB}.yaml").write_text(text)

    def alembic(self, verb: str, revision: str) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.history.location))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("sqlalchemy.url", self.plain)
        getattr(command, verb)(cfg, revision)

    def dump(self, url: str) -> str:
        return dump(url, self.pg)

    def steps(self, phase: str) -> list[tuple]:
        return journal_rows(self.root, f"select action, revision, status, detail from steps where phase = '{phase}' "
                                       "and kind = 'database' order by id")


def dump(url: str, pg: PgServer | None) -> str:
    """The whole schema as text: `pg_dump -s` on PostgreSQL, sqlite_master on SQLite; with the
    version table's contents."""
    version = _version(url)
    if pg is None:
        with sqlite3.connect(sa.engine.make_url(url).database) as conn:
            rows = conn.execute("select type, name, tbl_name, sql from sqlite_master "
                                "where name not like 'sqlite_%' order by type, name").fetchall()
        return f"version {version}\n" + "\n".join(map(repr, rows))
    dbname = sa.engine.make_url(url).database
    out = subprocess.run([str(pg.bindir / "pg_dump"), "-s", "-h", pg.host, "-p", str(pg.port), "-U", "postgres",
                          dbname], capture_output=True, text=True, check=True, timeout=60).stdout
    # Newer pg_dump wraps its output in \restrict with a random key.
    lines = [ln for ln in out.splitlines() if not ln.startswith(("\\restrict", "\\unrestrict"))]
    return f"version {version}\n" + "\n".join(lines)


def _version(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as c:
            if not sa.inspect(c).has_table("alembic_version"):
                return []
            return sorted(r[0] for r in c.execute(sa.text("select version_num from alembic_version")))
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one: SQLite and the journal fsync every commit, and a
    disk makes 160 revisions take seconds for nothing this test is about."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="release-test-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_repo(root: Path, dialect: str, url: str, plain: str, pg: PgServer | None = None, **kw) -> Repo:
    (root / "services.d").mkdir(parents=True)
    (root / "services.d" / "hosts.yaml").write_text("hosts: {}\n")
    history = write_history(root / "migrations" / "hist", dialect, **kw)
    repo = Repo(root, history, url, plain, pg)
    repo.manifest()
    return repo


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def repo(request: pytest.FixtureRequest, fast_dir: Path) -> Repo:
    if request.param == "sqlite":
        return make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                         f"sqlite:///{fast_dir / 'plain.db'}")
    pg: PgServer = request.getfixturevalue("pg")
    tool, plain = (pg.create_database(f"t_{uuid.uuid4().hex[:16]}") for _ in range(2))
    return make_repo(fast_dir / "repo", "postgresql", tool, plain, pg)


# ----------------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_apply_and_revert_leave_what_plain_alembic_leaves(repo: Repo) -> None:
    h = repo.history
    middle = h[100]  # after both irreversible revisions, before the branches, merge and data migration
    repo.manifest(target=middle.id)
    repo.run("apply", "r1", check=0)
    repo.alembic("upgrade", middle.id)
    assert repo.dump(repo.url) == repo.dump(repo.plain)

    repo.manifest()  # head
    repo.run("apply", "r2", check=0)
    repo.alembic("upgrade", "head")
    at_head = repo.dump(repo.plain)
    assert f"version ['{h.head}']" in at_head
    assert repo.dump(repo.url) == at_head
    applied = repo.steps("apply")[-59:]
    assert all(a == "migrate" and s == "ok" for a, _, s, _ in applied)
    assert sorted(r for _, r, _, _ in applied) == sorted(x.id for x in h.revisions[101:])

    # The revert crosses empty revisions, the data migration, the merge point and both branches.
    repo.run("revert", check=0)
    repo.alembic("downgrade", middle.id)
    assert repo.dump(repo.url) == repo.dump(repo.plain)
    assert f"version ['{middle.id}']" in repo.dump(repo.url)
    reverted = repo.steps("revert")
    assert len(reverted) == 59 and all(a == "downgrade" and s == "ok" for a, _, s, _ in reverted)
    assert journal_rows(repo.root, "select state from releases order by id desc limit 1") == [("reverted",)]


@pytest.mark.slow
def test_plan_names_the_revision_of_every_warning(repo: Repo) -> None:
    h = repo.history
    start = h[30]
    repo.manifest(target=start.id)
    repo.run("apply", "r1", check=0)
    repo.manifest()

    step = next(s for s in repo.json("plan", "r2")["steps"] if s["node"] == DB)
    warnings = step["warnings"]
    assert all(set(w) == {"revision", "kind", "message"} for w in warnings)
    [data] = h.role("data")
    unrendered = [w for w in warnings if w["kind"] == "not-rendered"]
    assert [w["revision"] for w in unrendered] == [data.id]
    assert "get_bind" in unrendered[0]["message"]
    # Every kind of risk, on the revision that causes it, and nothing else: statements on a
    # table created earlier in the same migration (also after a rename) are not flagged.
    got = {(w["revision"], w["kind"]) for w in warnings if w["kind"] != "not-rendered"}
    want = h.expected_risks(after=30)
    assert got == want
    kinds = {k for _, k in want}
    assert {"irreversible", "drop-table", "drop-column"} <= kinds
    if h.dialect == "postgresql":
        assert {"create-index", "not-null", "alter-type", "add-not-null"} <= kinds
    assert step["reversible"] is False

    text = repo.run("plan", "r2", check=0).stdout
    [raises] = h.role("raises")
    assert f"! {raises.id} ({raises.file}): irreversible:" in text
    assert f"! {raises.id} ({raises.file}): DROP COLUMN legacy.note" in text
    assert f"! {data.id} ({data.file}): risks not checked" in text
    # The 129 revisions are listed over several short lines, not one endless one.
    assert all(len(line) <= 110 for line in text.splitlines() if not line.lstrip().startswith("!"))
    assert all(r.id in text for r in h.revisions[31:])

    sql = repo.run("plan", "r2", "--sql", check=0).stdout
    for r in h.revisions[31:]:
        if r is data:
            assert f"-- {DB}: {r.id} ({r.file}): not rendered: AttributeError" in sql
            assert f"-- {DB}: {r.id} ({r.file})\n" not in sql
        else:
            assert f"-- {DB}: {r.id} ({r.file})\n" in sql
    after_data = sql.split(f"-- {DB}: {data.id}")[1]
    assert "-- Running upgrade" in after_data  # the revisions after it are rendered too
    drops = [r for r in h.revisions[31:] if any(k.kind == "drop-table" for k in r.risks)]
    section = sql.split(f"-- {DB}: {drops[0].id} ({drops[0].file})\n")[1].split(f"-- {DB}: ")[0]
    assert "DROP TABLE" in section


@pytest.mark.slow
def test_revert_stops_at_the_first_irreversible_revision_and_force_skips_it(repo: Repo) -> None:
    h = repo.history
    [raises], [noop] = h.role("raises"), h.role("pass")
    assert 30 < raises.index < noop.index < 80
    repo.manifest(target=h[30].id)
    repo.run("apply", "r1", check=0)
    repo.manifest(target=h[80].id)
    repo.run("apply", "r2", check=0)

    # Down revision by revision to the first one that cannot be undone, and no further.
    proc = repo.run("revert")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{noop.id} ({noop.file})" in proc.stderr and "does nothing" in proc.stderr
    assert "--force" in proc.stderr and f"{noop.index - 30} revisions of the release still applied" in proc.stderr
    assert "Traceback" not in proc.stderr
    repo.alembic("upgrade", h[80].id)
    repo.alembic("downgrade", noop.id)
    assert repo.dump(repo.url) == repo.dump(repo.plain)
    steps = repo.steps("revert")
    assert [(a, r, s) for a, r, s, _ in steps] == (
        [("downgrade", x.id, "ok") for x in reversed(h.revisions[noop.index + 1:81])]
        + [("downgrade", noop.id, "failed")])
    assert journal_rows(repo.root, "select state, revert_state from releases order by id desc limit 1") == [
        ("applied", "failed")]
    assert repo.json("status")["databases"][DB] == noop.id
    # Until the revert is finished, a plan says that apply will refuse.
    plan = repo.run("plan", "r3", check=0).stdout
    assert "note: the revert of release r2 is failed: run `release revert`" in plan

    # --force: each irreversible revision's downgrade is skipped on its own, journaled; every
    # other revision is downgraded; the version table ends where r1 left it.
    repo.run("revert", "--force", check=0)
    steps = repo.steps("revert")[len(steps):]
    skipped = [(r, s) for a, r, s, _ in steps if a == "skip"]
    assert skipped == [(noop.id, "ok"), (raises.id, "ok")]
    assert all("was not run" in d for a, _, _, d in steps if a == "skip")
    downgraded = [r for a, r, s, _ in steps if a == "downgrade" and s == "ok"]
    assert downgraded == [x.id for x in reversed(h.revisions[31:noop.index]) if x is not raises]
    # Plain Alembic, told to do the same: stamp over a revision instead of running its downgrade.
    repo.alembic("stamp", h[noop.index - 1].id)
    repo.alembic("downgrade", raises.id)
    repo.alembic("stamp", h[raises.index - 1].id)
    repo.alembic("downgrade", h[30].id)
    assert repo.dump(repo.url) == repo.dump(repo.plain)
    assert "note" not in _columns(repo.url, "legacy") and "flag" not in _columns(repo.url, "legacy")
    assert journal_rows(repo.root, "select state from releases order by id desc limit 1") == [("reverted",)]
    assert repo.json("status")["databases"][DB] == h[30].id


@pytest.mark.slow
def test_scripts_that_will_not_import_are_reported_cleanly_everywhere(fast_dir: Path) -> None:
    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=24, helper="histhelpers")
    [helper] = repo.history.role("helper")
    lib = repo.root / "lib"
    lib.mkdir()
    (lib / "histhelpers.py").write_text("NAME_LENGTH = 40\n")

    def clean(proc: subprocess.CompletedProcess, where: str) -> None:
        err = proc.stderr
        assert f"{helper.id} ({helper.file})" in err and "No module named 'histhelpers'" in err, err
        assert where in err and "python_path" in err and "PYTHONPATH" in err
        assert "Traceback" not in err and "/release-" not in err and str(fast_dir) not in err

    # plan and apply: exit 2 before anything runs.
    clean(repo.run("plan", "r1", check=2), "migrations/hist")
    clean(repo.run("apply", "r1", check=2), "migrations/hist")
    assert not (fast_dir / "tool.db").exists() and not (repo.root / ".release").exists()

    first = repo.history[10]  # above both irreversible revisions: the revert can go all the way
    repo.manifest(target=first.id, extra="python_path: [lib]\n")
    repo.run("apply", "r1", check=0)
    repo.manifest(extra="python_path: [lib]\n")
    repo.run("apply", "r2", check=0)

    # The helper moves; the revert runs the journal's copy of the scripts, which imports it.
    lib.rename(repo.root / "lib2")
    proc = repo.run("revert")
    assert proc.returncode == 1
    clean(proc, "the journal's copy of migrations/hist")
    assert journal_rows(repo.root, "select revert_state from releases order by id desc limit 1") == [("failed",)]
    assert _version(repo.url) == [repo.history.head]

    repo.run("revert", check=0, env={"PYTHONPATH": str(repo.root / "lib2")})
    assert _version(repo.url) == [first.id]
    assert journal_rows(repo.root, "select state from releases order by id desc limit 1") == [("reverted",)]


@pytest.mark.slow
def test_env_py_runs_once_for_all_revisions_of_a_run(fast_dir: Path) -> None:
    """Like `alembic upgrade`: one env.py run (and so one connection) for every revision, not
    one per revision; still one journal step and one transaction per revision."""
    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=20)
    runs = fast_dir / "env-runs"
    env_py = repo.history.location / "env.py"
    env_py.write_text(f"open({str(runs)!r}, 'a').write('run\\n')\n" + env_py.read_text())
    repo.run("plan", "r1", check=0)
    assert runs.read_text().count("run") == 1  # the risk checks render every revision in one run
    repo.run("apply", "r1", check=0)
    assert _version(repo.url) == [repo.history.head]
    assert len(repo.steps("apply")) == 20
    # The apply prints its plan first (the risk checks: one env.py run) and then runs all 20
    # revisions in one more: not one per revision.
    assert runs.read_text().count("run") == 3


@pytest.mark.slow
def test_a_revert_that_takes_a_database_back_up_says_upgrade(fast_dir: Path) -> None:
    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=24)
    h = repo.history  # 16..22: two branches and their merge; 23: the data migration
    repo.run("apply", "r1", check=0)
    assert f"release r1 (already the applied release)" in repo.run("plan", "r1", check=0).stdout
    repo.manifest(target=h[18].id)  # the tip of the first branch
    plan = repo.run("plan", "r2", check=0).stdout
    assert f"downgrade {h.head} -> {h[18].id}, undoing 5 revisions" in plan
    repo.run("apply", "r2", check=0)
    assert _version(repo.url) == [h[18].id]

    proc = repo.run("revert", "-v", check=0)
    assert _version(repo.url) == [h.head]
    assert [(a, s) for a, _, s, _ in repo.steps("revert")] == [("upgrade", "ok")] * 5
    assert "upgrade.done" in proc.stderr and "downgrade.done" not in proc.stderr


def test_one_transaction_and_one_journal_step_per_revision(fast_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaining the journal writes does not chain the revisions: the database sees exactly one
    commit per revision, the journal one step per revision, apply and revert alike."""
    import orchestrator
    from orchestrator.migrations import runtime

    repo = make_repo(fast_dir / "repo", "sqlite", f"sqlite:///{fast_dir / 'tool.db'}",
                     f"sqlite:///{fast_dir / 'plain.db'}", count=40)
    h = repo.history
    repo.manifest(target=h[8].id)
    commits: list[int] = []
    make_engine = runtime.MigrationRunner._engine

    def counted(self: runtime.MigrationRunner) -> sa.Engine:
        engine = make_engine(self)
        sa.event.listen(engine, "commit", lambda _conn: commits.append(1))
        return engine

    monkeypatch.setattr(runtime.MigrationRunner, "_engine", counted)
    orchestrator.apply(repo.root, "r1")
    assert len(commits) == 9
    assert [(r, s) for _a, r, s, _d in repo.steps("apply")] == [(x.id, "ok") for x in h.revisions[:9]]
    commits.clear()
    orchestrator.revert(repo.root)
    assert len(commits) == 9 and _version(repo.url) == []
    assert [(r, s) for _a, r, s, _d in repo.steps("revert")] == [(x.id, "ok") for x in reversed(h.revisions[:9])]
