"""End to end through the CLI with schemas (and the journal) on a real PostgreSQL (`pg` fixture).

The system is the embedded demo with its two databases moved to PostgreSQL: `accounts-db` through
`${ACCOUNTS_DB_URL}` (variable substitution, `postgresql+psycopg://`), `orders-db` with a literal
`postgresql://` URL (psycopg 3 either way). "v1" and "v2" differ by the databases' `target` or by
revision files added between them, as a release repository's commits would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import SERVICES, cli, closed_port, copy_demo, current, events, fail_orders_on, journal_rows, slow_deploys
from test_migrations import indexes

pytestmark = pytest.mark.e2e  # release runs as a process of its own

ORDERS_DEPENDENTS = ("orders", "notifications", "web")  # everything downstream of orders-db


# ------------------------------------------------------------------------------- helpers


@dataclass
class System:
    """A copy of the demo; `env` is what every CLI call gets (the `${VAR}` URL lives there)."""

    root: Path
    urls: dict[str, str] = field(default_factory=dict)  # database node -> URL to inspect it with
    env: dict[str, str] = field(default_factory=dict)
    secret: str | None = None  # the databases' password, when they need one

    def run(self, *args: str, check: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return cli(*args, cwd=self.root, env=self.env, check=check, timeout=timeout)

    def json(self, *args: str, check: int | None = 0) -> dict:
        return json.loads(self.run(*args, "--json", check=check).stdout)

    def schema(self, db: str) -> tuple[str | None, dict[str, set[str]]]:
        return schema(self.urls[db])

    def db_file(self, name: str) -> Path:
        return self.root / "services.d" / f"{name}.yaml"

    def set_target(self, db: str, target: str | None) -> None:
        path = self.db_file(db)
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("target:")]
        if target:
            lines.append(f"target: {target}")
        path.write_text("\n".join(lines) + "\n")

    def set_url(self, db: str, url: str) -> None:
        path = self.db_file(db)
        path.write_text(re.sub(r"(?m)^url: .*$", f"url: {url}", path.read_text()))

    def journal_rows(self, sql: str) -> list[tuple]:
        return journal_rows(self.root, sql)


def schema(url: str) -> tuple[str | None, dict[str, set[str]]]:
    """(alembic_version, {table: columns}) of a database, read through information_schema."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as c:
            if engine.dialect.name == "sqlite":
                insp = sa.inspect(c)
                tables = {t: {col["name"] for col in insp.get_columns(t)} for t in insp.get_table_names()}
            else:
                tables = {}
                for t, col in c.execute(sa.text(
                        "select table_name, column_name from information_schema.columns "
                        "where table_schema = 'public'")):
                    tables.setdefault(t, set()).add(col)
            version = None
            if "alembic_version" in tables:
                version = c.execute(sa.text("select version_num from alembic_version")).scalar()
            tables.pop("alembic_version", None)
            return version, tables
    finally:
        engine.dispose()


def add_revision(root: Path, db: str, rev: str, down: str, upgrade: str, downgrade: str | None) -> Path:
    """A revision file in migrations/<db>/versions, as a developer commits one."""
    body = _indent(upgrade)
    src = (f'"""{rev}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
           f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
           f"def upgrade():\n{body}\n")
    if downgrade is not None:
        src += f"\n\ndef downgrade():\n{_indent(downgrade)}\n"
    path = root / "migrations" / db / "versions" / f"{rev}.py"
    path.write_text(src)
    return path


def _indent(code: str) -> str:
    lines = [ln.strip() for ln in code.strip().splitlines()]
    return "\n".join("    " + ln for ln in lines)


def assert_services_at(root: Path, version: str | None, only: tuple[str, ...] | None = None) -> None:
    for svc, hosts in SERVICES.items():
        if only is None or svc in only:
            for h in hosts:
                assert current(root, h, svc) == version, (svc, h)


def everything_written(root: Path) -> str:
    """Every file under .release (journal, logs, host directories) as text."""
    out = []
    for p in (root / ".release").rglob("*"):
        if p.is_file():
            out.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


# ------------------------------------------------------------------------------ fixtures


PW_ROLE, PW_SECRET = "release_pw", "An0ther-S3cret-pw"


def password_role(pg) -> None:  # noqa: ANN001
    """A role that must log in with its password (the fixture's server trusts everyone else)."""
    hba = pg.datadir / "pg_hba.conf"
    line = f"host all {PW_ROLE} 127.0.0.1/32 scram-sha-256\n"
    if line not in hba.read_text():
        hba.write_text(line + hba.read_text())
    with pg.connect() as c:
        if c.execute("select 1 from pg_roles where rolname = %s", (PW_ROLE,)).fetchone() is None:
            c.execute(f"CREATE ROLE {PW_ROLE} LOGIN PASSWORD '{PW_SECRET}'")
        c.execute("select pg_reload_conf()")
    import psycopg

    for _ in range(50):  # the reload is asynchronous: wait until a wrong password is refused
        try:
            psycopg.connect(host=pg.host, port=pg.port, user=PW_ROLE, password="***", dbname="postgres",
                            connect_timeout=5).close()
        except psycopg.OperationalError:
            return
        time.sleep(0.1)
    raise AssertionError("password authentication did not take effect")


def pg_system(tmp_path: Path, pg, password: bool = False) -> System:  # noqa: ANN001 - tests/pgserver.PgServer
    """The demo on two fresh PostgreSQL databases; with `password`, owned by a role that needs one."""
    root = copy_demo(tmp_path / "repo")
    tag = uuid.uuid4().hex[:12]
    urls = {"accounts-db": pg.create_database(f"accounts_{tag}"), "orders-db": pg.create_database(f"orders_{tag}")}
    login = urls
    if password:
        password_role(pg)
        with pg.connect() as c:
            for url in urls.values():
                c.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" OWNER TO {PW_ROLE}')
        login = {db: url.replace("postgres@", f"{PW_ROLE}:{PW_SECRET}@") for db, url in urls.items()}
    sysm = System(root, urls, {"ACCOUNTS_DB_URL": login["accounts-db"]}, PW_SECRET if password else None)
    sysm.set_url("accounts-db", "${ACCOUNTS_DB_URL}")
    sysm.set_url("orders-db", login["orders-db"].replace("postgresql+psycopg://", "postgresql://"))
    return sysm


@pytest.fixture
def shop(tmp_path: Path, pg) -> System:  # noqa: ANN001
    return pg_system(tmp_path, pg)


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def any_shop(request: pytest.FixtureRequest, tmp_path: Path) -> System:
    if request.param == "postgresql":
        return pg_system(tmp_path, request.getfixturevalue("pg"), password=True)
    root = copy_demo(tmp_path / "repo")
    return System(root, {"accounts-db": f"sqlite:///{root / '.release' / 'accounts.db'}",
                         "orders-db": f"sqlite:///{root / '.release' / 'orders.db'}"})


# --------------------------------------------------------------------------------- tests


@pytest.mark.postgres
def test_demo_on_postgresql_apply_v1_v2_revert(shop: System) -> None:
    # v1: each schema at its first revision.
    shop.set_target("accounts-db", "a1_users")
    shop.set_target("orders-db", "o1_orders")
    shop.run("apply", "v1", check=0)
    v1 = {db: shop.schema(db) for db in shop.urls}
    assert v1["accounts-db"] == ("a1_users", {"users": {"id", "username", "created_at"}})
    assert v1["orders-db"] == ("o1_orders", {"orders": {"id", "user_id", "total_cents", "created_at"}})
    assert_services_at(shop.root, "v1")

    # v2: the targets go to head, two more revisions on each database.
    shop.set_target("accounts-db", None)
    shop.set_target("orders-db", None)
    shop.run("apply", "v2", check=0)
    version, tables = shop.schema("accounts-db")
    assert version == "a3_sessions" and "email" in tables["users"] and "sessions" in tables
    version, tables = shop.schema("orders-db")
    assert version == "o3_status" and "status" in tables["orders"] and "order_items" in tables
    assert_services_at(shop.root, "v2")
    steps = shop.journal_rows("select node, revision, status from steps where phase='apply' and kind='database' "
                              "and release_id=(select max(id) from releases) order by id")
    assert steps == [("accounts-db", "a2_email", "ok"), ("accounts-db", "a3_sessions", "ok"),
                     ("orders-db", "o2_items", "ok"), ("orders-db", "o3_status", "ok")]

    shop.run("revert", check=0)
    assert {db: shop.schema(db) for db in shop.urls} == v1
    assert_services_at(shop.root, "v1")
    assert shop.journal_rows("select name, state from releases order by id") == [
        ("v1", "applied"), ("v2", "reverted")]


@pytest.mark.postgres
def test_failing_second_revision_on_postgresql(shop: System) -> None:
    shop.run("apply", "v1", check=0)
    before = shop.schema("orders-db")
    add_revision(shop.root, "orders", "o4_notes", "o3_status",
                 "op.create_table('order_notes', sa.Column('id', sa.Integer, primary_key=True))",
                 "op.drop_table('order_notes')")
    add_revision(shop.root, "orders", "o5_tags", "o4_notes",
                 """op.create_table('order_tags', sa.Column('id', sa.Integer, primary_key=True))
                 raise RuntimeError('o5_tags broke after creating its table')""",
                 "op.drop_table('order_tags')")

    proc = shop.run("apply", "v2", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "o5_tags" in proc.stderr and "o5_tags broke" in proc.stderr
    assert "stays at o4_notes" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["state"] == "failed"
    db_steps = [(s["revision"], s["outcome"]) for s in result["steps"] if s["node"] == "orders-db"]
    assert db_steps == [("o4_notes", "ok"), ("o5_tags", "failed")]
    # The first revision committed, the second left nothing behind.
    version, tables = shop.schema("orders-db")
    assert version == "o4_notes" and "order_notes" in tables and "order_tags" not in tables
    st = shop.json("status")
    assert st["state"] == "failed" and st["databases"]["orders-db"] == "o4_notes"
    assert shop.journal_rows("select revision, status from steps where node='orders-db' and "
                             "release_id=(select max(id) from releases) order by id") == [
        ("o4_notes", "ok"), ("o5_tags", "failed")]
    # Nothing that needs the new schema was deployed.
    assert_services_at(shop.root, "v1", only=ORDERS_DEPENDENTS)

    shop.run("revert", check=0)
    assert shop.schema("orders-db") == before
    assert_services_at(shop.root, "v1")


def test_a_concurrent_index_in_an_autocommit_block_applies_and_reverts(shop: System) -> None:
    """CREATE INDEX CONCURRENTLY, which the plan's risk check recommends, runs outside any
    transaction: in Alembic's autocommit_block(), journaled as one step like any revision."""
    shop.run("apply", "v1", check=0)
    add_revision(shop.root, "orders", "o4_status_idx", "o3_status",
                 """op.add_column('orders', sa.Column('region', sa.Text))
                 with op.get_context().autocommit_block(): op.create_index('ix_orders_status', 'orders', ['status'], postgresql_concurrently=True)""",  # noqa: E501
                 """with op.get_context().autocommit_block(): op.drop_index('ix_orders_status', 'orders', postgresql_concurrently=True)
                 op.drop_column('orders', 'region')""")  # noqa: E501

    result = shop.json("apply", "v2")
    assert result["state"] == "applied"
    assert [(s["revision"], s["outcome"]) for s in result["steps"] if s["node"] == "orders-db"] == [
        ("o4_status_idx", "ok")]
    version, tables = shop.schema("orders-db")
    assert version == "o4_status_idx" and "region" in tables["orders"]
    assert "ix_orders_status" in indexes(shop.urls["orders-db"], "orders")

    shop.run("revert", check=0)
    version, tables = shop.schema("orders-db")
    assert version == "o3_status" and "region" not in tables["orders"]
    assert "ix_orders_status" not in indexes(shop.urls["orders-db"], "orders")


@pytest.mark.slow
def test_archived_scripts_revert_after_checkout(any_shop: System) -> None:
    # On PostgreSQL the databases need a password: written into orders-db's manifest, and inside
    # ${ACCOUNTS_DB_URL} for accounts-db. It must reach neither output nor journal nor logs, and the
    # revert must still log in.
    shop = any_shop
    outputs = [shop.run("apply", "v1", "-v", check=0)]
    v1 = {db: shop.schema(db) for db in shop.urls}
    new = [
        add_revision(shop.root, "accounts", "a4_audit", "a3_sessions",
                     "op.create_table('audit_log', sa.Column('id', sa.Integer, primary_key=True))",
                     "op.drop_table('audit_log')"),
        add_revision(shop.root, "orders", "o4_notes", "o3_status",
                     "op.create_table('order_notes', sa.Column('id', sa.Integer, primary_key=True))",
                     "op.drop_table('order_notes')"),
        add_revision(shop.root, "orders", "o5_gift", "o4_notes",
                     "op.add_column('orders', sa.Column('gift', sa.Boolean, nullable=True))",
                     "op.drop_column('orders', 'gift')"),
    ]
    outputs.append(shop.run("apply", "v2", "-v", check=0))
    assert shop.schema("accounts-db")[0] == "a4_audit" and shop.schema("orders-db")[0] == "o5_gift"
    assert "gift" in shop.schema("orders-db")[1]["orders"]

    # `git checkout` of the previous commit: the new revision files are gone from the repository,
    # and the database manifests differ (so the journal's copy of them is what revert reads).
    for path in new:
        path.unlink()
    for db in shop.urls:
        shop.db_file(db).write_text("# as of v1\n" + shop.db_file(db).read_text())
    assert not list(shop.root.glob("migrations/*/versions/[ao][45]_*.py"))
    outputs.append(shop.run("revert", "-v", check=0))
    assert {db: shop.schema(db) for db in shop.urls} == v1
    assert_services_at(shop.root, "v1")
    # The repository is as the checkout left it: nothing restored into it.
    assert not list(shop.root.glob("migrations/*/versions/[ao][45]_*.py"))
    if shop.secret:
        assert shop.secret not in "\n".join(p.stdout + p.stderr for p in outputs)
        written = everything_written(shop.root)
        assert shop.secret not in written and f"{PW_ROLE}:***@" in written


@pytest.mark.postgres
def test_plan_flags_risks_and_the_irreversible_revert_policy(shop: System) -> None:
    shop.run("apply", "v1", check=0)
    add_revision(shop.root, "accounts", "a4_audit", "a3_sessions",
                 """op.create_table('audit_log', sa.Column('id', sa.Integer, primary_key=True))
                 op.create_index('ix_users_created_at', 'users', ['created_at'])""",
                 """op.drop_index('ix_users_created_at', table_name='users')
                 op.drop_table('audit_log')""")
    add_revision(shop.root, "orders", "o4_drop_total", "o3_status",
                 "op.drop_column('orders', 'total_cents')", "pass")
    add_revision(shop.root, "orders", "o5_priority", "o4_drop_total",
                 "op.add_column('orders', sa.Column('priority', sa.Integer, nullable=False))",
                 "op.drop_column('orders', 'priority')")

    plan = shop.json("plan", "v2")
    by = {s["node"]: s for s in plan["steps"]}
    orders = by["orders-db"]
    assert orders["action"] == "migrate" and orders["revisions"] == ["o4_drop_total", "o5_priority"]
    assert orders["reversible"] is False
    # Each warning names the revision it comes from.
    warnings = {(w["revision"], w["kind"]): w["message"] for w in orders["warnings"]}
    assert set(warnings) == {("o4_drop_total", "irreversible"), ("o4_drop_total", "drop-column"),
                             ("o5_priority", "add-not-null")}
    assert "DROP COLUMN orders.total_cents" in warnings["o4_drop_total", "drop-column"]
    assert "ADD COLUMN orders.priority NOT NULL without DEFAULT" in warnings["o5_priority", "add-not-null"]
    accounts = by["accounts-db"]
    assert accounts["revisions"] == ["a4_audit"] and accounts["reversible"] is True
    assert accounts["warnings"] == [{
        "revision": "a4_audit", "kind": "create-index",
        "message": "CREATE INDEX ix_users_created_at ON users without CONCURRENTLY: blocks writes to users "
                   "while the index is built"}]

    # --sql: the DDL of every new revision, per database; nothing is created or changed.
    before = {db: shop.schema(db) for db in shop.urls}
    releases = shop.journal_rows("select count(*) from releases")
    sql = shop.run("plan", "v2", "--sql", check=0).stdout
    assert sql.index("-- accounts-db") < sql.index("CREATE TABLE audit_log") < sql.index("-- orders-db")
    assert "CREATE TABLE audit_log" in sql and "CREATE INDEX ix_users_created_at ON users" in sql
    assert "ALTER TABLE orders DROP COLUMN total_cents" in sql
    assert "ALTER TABLE orders ADD COLUMN priority INTEGER NOT NULL" in sql
    assert {db: shop.schema(db) for db in shop.urls} == before
    assert shop.journal_rows("select count(*) from releases") == releases

    # Apply the irreversible release, then revert it.
    shop.run("apply", "v2", check=0)
    assert shop.schema("orders-db")[0] == "o5_priority"
    after_v2 = {db: shop.schema(db) for db in shop.urls}
    proc = shop.run("revert")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "o4_drop_total" in proc.stderr and "--force" in proc.stderr
    # Everything that depends on orders-db was reverted before the refusal; orders-db went down as
    # far as it can, to the irreversible o4_drop_total; accounts-db waits on orders-db, which
    # depends on it, so it did not move.
    assert_services_at(shop.root, "v1", only=ORDERS_DEPENDENTS)
    version, tables = shop.schema("orders-db")
    assert version == "o4_drop_total" and tables["orders"] == after_v2["orders-db"][1]["orders"] - {"priority"}
    assert shop.schema("accounts-db") == after_v2["accounts-db"]
    assert shop.journal_rows("select state, revert_state from releases order by id desc limit 1") == [
        ("applied", "failed")]

    proc = shop.run("revert", "--force", check=0)
    assert "reverted" in proc.stdout
    # o4_drop_total's downgrade was skipped: the version table is past it, its column stays dropped.
    assert shop.schema("orders-db") == ("o3_status", {**before["orders-db"][1], "orders": tables["orders"]})
    assert "total_cents" not in tables["orders"]
    assert shop.schema("accounts-db") == before["accounts-db"]  # downgraded as usual
    assert_services_at(shop.root, "v1")
    skip = shop.journal_rows("select node, action, revision, status, detail from steps where phase='revert' "
                             "and kind='database' and action='skip'")
    assert len(skip) == 1 and skip[0][:4] == ("orders-db", "skip", "o4_drop_total", "ok")
    assert "o4_drop_total" in skip[0][4]
    assert shop.journal_rows("select state from releases order by id desc limit 1") == [("reverted",)]


@pytest.mark.postgres
def test_drift_is_reported_and_refused_unless_forced(shop: System) -> None:
    from alembic import command
    from alembic.config import Config

    shop.run("apply", "v1", check=0)
    # Someone downgrades orders-db by hand, with alembic's own command line API.
    cfg = Config()
    cfg.set_main_option("script_location", str(shop.root / "migrations" / "orders"))
    cfg.set_main_option("sqlalchemy.url", shop.urls["orders-db"])
    command.downgrade(cfg, "o2_items")
    assert shop.schema("orders-db")[0] == "o2_items"

    plan = shop.json("plan", "v2")
    step = next(s for s in plan["steps"] if s["node"] == "orders-db")
    assert step["action"] == "migrate" and step["from"] == "o2_items"
    assert any(w["kind"] == "drift" and w["revision"] is None and w["message"].startswith("drift: orders-db is at o2_items")
               and "o3_status" in w["message"] for w in step["warnings"])

    proc = shop.run("apply", "v2")
    assert proc.returncode == 2, proc.stderr
    assert "drift: orders-db" in proc.stderr and "outside" in proc.stderr and "--force orders-db" in proc.stderr
    assert_services_at(shop.root, "v1")
    assert shop.journal_rows("select name from releases") == [("v1",)]

    shop.run("apply", "v2", "--force", "orders-db", check=0)
    assert shop.schema("orders-db")[0] == "o3_status"
    assert_services_at(shop.root, "v2")


@pytest.mark.postgres
def test_unreachable_database_names_the_node_and_hides_the_password(shop: System) -> None:
    secret = "Sup3r-S3cret-pw"
    port = closed_port()
    shop.set_url("orders-db", f"postgresql://shop:{secret}@127.0.0.1:{port}/shop")
    for args in (("plan", "v1"), ("apply", "v1", "-v")):
        proc = shop.run(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "database orders-db: cannot connect to" in proc.stderr, proc.stderr
        assert f"shop:***@127.0.0.1:{port}" in proc.stderr, proc.stderr
        assert secret not in proc.stdout + proc.stderr
    # Refused before any change: no release recorded, no host touched, no schema migrated.
    assert shop.journal_rows("select count(*) from releases") == [(0,)]
    assert not (shop.root / ".release" / "hosts").exists()
    assert shop.schema("accounts-db") == (None, {})
    assert secret not in everything_written(shop.root)


# ------------------------------------------------------------------- the journal on PostgreSQL



def test_journal_on_postgresql_end_to_end(tmp_path: Path, pg_db: str) -> None:
    root = copy_demo(tmp_path / "repo")
    j = ("--journal", pg_db)

    def run(*args: str, check: int | None = None) -> subprocess.CompletedProcess:
        return cli(*args, *j, cwd=root, check=check)

    run("apply", "v2.3", check=0)
    add_revision(root, "orders", "o4_notes", "o3_status",
                 "op.create_table('order_notes', sa.Column('id', sa.Integer, primary_key=True))",
                 "op.drop_table('order_notes')")
    fail_orders_on(root, "app2", "v2.4")
    proc = run("apply", "v2.4", "--json")
    assert proc.returncode == 1 and "orders broke on app2" in proc.stderr
    failed = [(s["node"], s["host"], s["exit_code"]) for s in json.loads(proc.stdout)["steps"]
              if s["outcome"] == "failed"]
    assert failed == [("orders", "app2", 3)]
    assert current(root, "edge1", "web") == "v2.3"

    st = json.loads(run("status", "--json", check=0).stdout)
    assert (st["release"], st["state"]) == ("v2.4", "failed")
    assert st["services"]["orders"] == {"app1": "v2.4", "app2": "v2.3"}
    assert st["databases"]["orders-db"] == "o4_notes"
    # Everything lives in PostgreSQL: the project has no journal file.
    assert not (root / ".release" / "journal.db").exists()
    engine = sa.create_engine(pg_db, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("select name, state from releases order by id")).all()
            archived = c.execute(sa.text("select files from archives where node = 'orders-db' "
                                         "order by release_id desc")).scalar()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("v2.3", "applied"), ("v2.4", "failed")]
    assert "versions/o4_notes.py" in json.loads(archived)

    run("revert", check=0)
    assert_services_at(root, "v2.3")
    assert schema(f"sqlite:///{root / '.release' / 'orders.db'}")[0] == "o3_status"
    # RELEASE_JOURNAL names the same journal.
    hist = json.loads(cli("history", "--json", cwd=root, env={"RELEASE_JOURNAL": pg_db}, check=0).stdout)
    assert [(h["release"], h["state"]) for h in hist] == [("v2.4", "reverted"), ("v2.3", "applied")]


@pytest.mark.postgres
def test_concurrent_applies_on_a_postgresql_journal(tmp_path: Path, pg_db: str) -> None:
    root = copy_demo(tmp_path / "repo")
    slow_deploys(root, {"catalog": 1.5})
    env = dict(os.environ, NO_COLOR="1")
    env.pop("RELEASE_FAULT", None)
    cmd = [sys.executable, "-m", "orchestrator", "apply", "v1", "--journal", pg_db]
    # Both start at once, on a journal database that has no schema yet.
    procs = [subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True) for _ in range(2)]
    results = [(p, *p.communicate(timeout=120)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 3], [(p.returncode, err) for p, _, err in results]
    winner = next(p for p, _, _ in results if p.returncode == 0)
    _, _, err = next(r for r in results if r[0].returncode == 3)
    assert "held by" in err and f"pid {winner.pid}" in err and "apply v1" in err
    # Exactly one ran: one release, each host deployed once.
    assert_services_at(root, "v1")
    assert [e[3] for e in events(root, "edge1") if e[1] == "start"] == ["web"]
    assert sum(1 for e in events(root, "app1") if e[1] == "start" and e[3] == "catalog") == 1
    engine = sa.create_engine(pg_db, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as c:
            assert [tuple(r) for r in c.execute(sa.text("select name, state from releases"))] == [("v1", "applied")]
    finally:
        engine.dispose()


def test_unlock_on_a_postgresql_journal_spares_a_live_holder(tmp_path: Path, pg_db: str) -> None:
    """On PostgreSQL the advisory lock tells a live holder from a stale row: `release unlock`
    refuses the first (exit 3) and removes the second."""
    root = copy_demo(tmp_path / "repo")
    slow_deploys(root, {"catalog": 3})
    env = dict(os.environ, NO_COLOR="1")
    env.pop("RELEASE_FAULT", None)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "apply", "v1", "--journal", pg_db], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    engine = sa.create_engine(pg_db, poolclass=sa.pool.NullPool)

    def lock_ids() -> list[str]:
        try:
            with engine.connect() as c:
                return [r[0] for r in c.execute(sa.text("select lock_id from lock"))]
        except sa.exc.ProgrammingError:  # the schema is not there yet
            return []

    try:
        deadline = time.monotonic() + 60
        while not lock_ids():
            assert time.monotonic() < deadline and proc.poll() is None, "the apply never took the lock"
            time.sleep(0.05)
        [held] = lock_ids()
        refused = cli("unlock", held, "--journal", pg_db, cwd=root)
        assert refused.returncode == 3 and "advisory lock" in refused.stderr and "nothing removed" in refused.stderr
        assert lock_ids() == [held]
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        # A row left behind by a holder whose session is gone is stale: unlock removes it.
        with engine.begin() as c:
            c.execute(sa.text("insert into lock (id, lock_id, owner, hostname, pid, proc_start, command, since, "
                              "heartbeat) values (1, 'deadbeef0000', 'ci', 'gone.example', 1, 1, 'apply v2', "
                              ":t, :t)"), {"t": time.time()})
        cli("unlock", "deadbeef0000", "--journal", pg_db, cwd=root, check=0)
        assert lock_ids() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.dispose()
