"""The migration runner against real databases: SQLite files and a real PostgreSQL (`pg` fixture)."""

from __future__ import annotations

import shutil
import textwrap
import traceback
from pathlib import Path

import alembic
import pytest
import sqlalchemy as sa

from helpers import closed_port
from orchestrator.errors import InputError, StepFailed
from orchestrator.migrations import (
    Hop,
    MigrationRunner,
    archive,
    in_worker,
    mask_url,
    resolve_url,
    restore,
    risks,
)

REPO = Path(__file__).resolve().parent.parent
DEMO = {"accounts": REPO / "migrations" / "accounts", "orders": REPO / "migrations" / "orders"}
HEAD = {"accounts": "a3_sessions", "orders": "o3_status"}
STOCK_ENV = Path(alembic.__file__).parent / "templates" / "generic" / "env.py"  # `alembic init`'s

# What each demo revision adds, so that a test sees it really ran (and really went away).
EFFECT: dict[str, tuple[str, str | None]] = {
    "a1_users": ("users", None),
    "a2_email": ("users", "email"),
    "a3_sessions": ("sessions", None),
    "o1_orders": ("orders", None),
    "o2_items": ("order_items", None),
    "o3_status": ("orders", "status"),
}


# ------------------------------------------------------------------------------- helpers


def schema(url: str) -> dict[str, set[str]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        insp = sa.inspect(engine)
        return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}
    finally:
        engine.dispose()


def has_effect(url: str, revision: str) -> bool:
    table, column = EFFECT[revision]
    tables = schema(url)
    return table in tables and (column is None or column in tables[table])


def undo(hop: Hop) -> Hop:
    return Hop(hop.to_rev, hop.from_rev, hop.revision, "down")


def make_scripts(root: Path, revisions: list[tuple[str, str, str | None]], env: Path | None = None) -> Path:
    """An Alembic script directory with a linear history of (id, upgrade body, downgrade body).

    A downgrade body of None leaves the downgrade() function out altogether.
    """
    root.mkdir(parents=True)
    (root / "versions").mkdir()
    shutil.copy(env or DEMO["accounts"] / "env.py", root / "env.py")
    shutil.copy(DEMO["accounts"] / "script.py.mako", root / "script.py.mako")
    down_rev = None
    for rev, up, down in revisions:
        src = (
            "from alembic import op\nimport sqlalchemy as sa\n\n"
            f"revision = {rev!r}\ndown_revision = {down_rev!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade():\n" + textwrap.indent(textwrap.dedent(up).strip() or "pass", "    ") + "\n"
        )
        if down is not None:
            src += "\n\ndef downgrade():\n" + textwrap.indent(textwrap.dedent(down).strip(), "    ") + "\n"
        (root / "versions" / f"{rev}.py").write_text(src)
        down_rev = rev
    return root


def apply_all(runner: MigrationRunner, from_rev: str | None, to_rev: str | None) -> None:
    for hop in runner.hops(from_rev, to_rev):
        runner.apply_hop(hop)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("pg_db")


FAILING = [
    ("r1", "op.create_table('t1', sa.Column('id', sa.Integer, primary_key=True))", "op.drop_table('t1')"),
    (
        "r2",
        """
        op.create_table('t2', sa.Column('id', sa.Integer, primary_key=True))
        op.add_column('t1', sa.Column('extra', sa.String(10)))
        raise RuntimeError('boom in r2')
        """,
        "op.drop_table('t2')",
    ),
]


# ------------------------------------------------------------------------- demo revisions


@pytest.mark.parametrize("db", ["accounts", "orders"])
def test_demo_round_trip_every_revision(db: str, db_url: str) -> None:
    runner = MigrationRunner(f"{db}-db", db_url, DEMO[db])
    runner.check_scripts()
    assert runner.resolve_target("head") == HEAD[db]
    hops = runner.hops(None, HEAD[db])
    assert [h.direction for h in hops] == ["up"] * 3
    assert hops[0].from_rev is None and hops[-1].to_rev == HEAD[db]

    for hop in hops:
        assert runner.apply_hop(hop) == (hop.revision,)
        assert has_effect(db_url, hop.revision)
        runner.apply_hop(undo(hop))
        assert runner.current_heads() == ((hop.from_rev,) if hop.from_rev else ())
        assert not has_effect(db_url, hop.revision)
        runner.apply_hop(hop)
        assert runner.current_heads() == (hop.revision,)
        assert has_effect(db_url, hop.revision)

    down = runner.hops(HEAD[db], None)
    assert [h.revision for h in down] == [h.revision for h in reversed(hops)]
    apply_all(runner, HEAD[db], None)
    assert runner.current_heads() == ()
    assert set(schema(db_url)) <= {"alembic_version"}


def test_demo_revisions_are_reversible_and_render_safe_sql() -> None:
    for db, loc in DEMO.items():
        runner = MigrationRunner(db, "postgresql+psycopg://u@127.0.0.1:1/x", loc)
        assert all(runner.is_reversible(h.revision) for h in runner.hops(None, HEAD[db]))
        sql = runner.offline_sql(None, HEAD[db])
        assert risks(sql, "postgresql") == []  # new tables and defaulted columns only
    sql = MigrationRunner("a", "sqlite:///x.db", DEMO["accounts"]).offline_sql(None, "a3_sessions")
    assert "CREATE TABLE users" in sql and "ADD COLUMN email" in sql and "CREATE TABLE sessions" in sql


def test_apply_hop_refuses_a_database_that_is_elsewhere(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    runner = MigrationRunner("accounts-db", url, DEMO["accounts"])
    first, _, third = runner.hops(None, "a3_sessions")
    runner.apply_hop(first)
    with pytest.raises(StepFailed, match=r"accounts-db.*a3_sessions.*at a1_users.*nothing was changed"):
        runner.apply_hop(third)
    assert runner.current_heads() == ("a1_users",)
    assert "sessions" not in schema(url)


async def test_in_worker_runs_the_call_off_the_loop(tmp_path: Path) -> None:
    runner = MigrationRunner("accounts-db", f"sqlite:///{tmp_path / 'a.db'}", DEMO["accounts"])
    await in_worker(runner.apply_hop, runner.hops(None, "a1_users")[0])
    assert await in_worker(runner.current_heads) == ("a1_users",)


# ---------------------------------------------------------------------- atomic revisions


def test_failing_revision_leaves_previous_revision(tmp_path: Path, db_url: str) -> None:
    runner = MigrationRunner("shop-db", db_url, make_scripts(tmp_path / "scripts", FAILING))
    first, second = runner.hops(None, "r2")
    runner.apply_hop(first)
    with pytest.raises(StepFailed) as err:
        runner.apply_hop(second)
    msg = str(err.value)
    assert "shop-db" in msg and "r2" in msg and "boom in r2" in msg
    assert "rolled back" in msg and "stays at r1" in msg
    assert runner.current_heads() == ("r1",)
    tables = schema(db_url)
    assert "t2" not in tables
    assert tables["t1"] == {"id"}


def serve_saying_no(session, go, when) -> None:  # noqa: ANN001
    """Run the session's hops until it is closed; `go` says False once a statement `when(sql)`
    has been sent to the database: the revision has begun, its go not yet given."""
    def no_once_it_ran(conn, _cursor, statement: str, *_: object) -> None:  # noqa: ANN001
        if when(statement) and not go.done():
            go.set_result(False)

    session.close()
    sa.event.listen(sa.Engine, "before_cursor_execute", no_once_it_ran)
    try:
        session.serve()
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", no_once_it_ran)


def test_a_revision_told_not_to_commit_is_rolled_back_and_the_next_one_still_runs(db_url: str) -> None:
    """A hop given `go` runs at once but commits only on True: on False (its journal intent
    failed, the run is stopping) everything it ran is rolled back, and the session goes on."""
    from concurrent.futures import Future

    from orchestrator.migrations.session import HopSession

    runner = MigrationRunner("accounts-db", db_url, DEMO["accounts"])
    first, second, _ = runner.hops(None, "a3_sessions")
    stop: Future[bool] = Future()
    go: Future[bool] = Future()
    go.set_result(True)

    session = HopSession(runner)
    done = [session.submit(first), session.submit(second, go=stop), session.submit(second, go=go)]
    # Said only once the revision's own statements and version-table write have run.
    serve_saying_no(session, stop, lambda sql: "alembic_version" in sql and "a2_email" in sql)
    assert stop.done(), "the revision never ran before its go"
    assert [f.result() for f in done] == [("a1_users",), ("a1_users",), ("a2_email",)]
    assert runner.current_heads() == ("a2_email",)
    assert has_effect(db_url, "a2_email")


def test_timeout_aborts_a_revision_and_rolls_it_back(tmp_path: Path, db_url: str) -> None:
    endless = ("SELECT pg_sleep(30)" if db_url.startswith("postgresql") else
               "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
    revisions = [FAILING[0], ("r2", f"""
        op.create_table('t2', sa.Column('id', sa.Integer, primary_key=True))
        op.execute({endless!r})
        """, "op.drop_table('t2')")]
    runner = MigrationRunner("shop-db", db_url, make_scripts(tmp_path / "scripts", revisions), timeout=1)
    first, second = runner.hops(None, "r2")
    runner.apply_hop(first)
    with pytest.raises(StepFailed) as err:
        runner.apply_hop(second)
    assert "shop-db" in str(err.value) and "r2" in str(err.value) and "stays at r1" in str(err.value)
    assert runner.current_heads() == ("r1",)
    assert "t2" not in schema(db_url)


def test_stock_env_py_works_but_a_failure_may_be_half_applied(tmp_path: Path) -> None:
    """The env.py `alembic init` writes opens its own connection: it works, without atomicity."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    runner = MigrationRunner("shop-db", url, make_scripts(tmp_path / "scripts", FAILING, env=STOCK_ENV))
    first, second = runner.hops(None, "r2")
    assert runner.apply_hop(first) == ("r1",)
    with pytest.raises(StepFailed, match=r"(?s)shop-db.*r2.*MAY BE HALF-APPLIED"):
        runner.apply_hop(second)
    assert runner.current_heads() == ("r1",)


# ------------------------------------------------------------------------ reversibility


def test_is_reversible_detects_empty_missing_and_raising_downgrades(tmp_path: Path) -> None:
    table = "op.create_table('x', sa.Column('id', sa.Integer, primary_key=True))"
    change = "op.add_column('x', sa.Column('y', sa.Integer))"
    loc = make_scripts(tmp_path / "s", [
        ("good", table, "op.drop_table('x')"),
        ("only_pass", change, "pass"),
        ("doc_and_pass", change, '"""Downgrade schema."""\npass'),
        ("ellipsis", change, "..."),
        ("raises", "pass", "raise NotImplementedError('one-way')"),
        ("works_then_raises", "pass", "op.drop_table('x')\nraise RuntimeError('no')"),
        ("missing", "pass", None),
        ("conditional", "pass", "if op.get_context().dialect.name == 'sqlite':\n    raise NotImplementedError\nop.drop_table('x')"),
        # Nothing done, nothing to undo: a placeholder or merge point never blocks a revert.
        ("empty", "pass", "pass"),
        ("empty_doc", '"""Nothing to do."""', '"""Nothing to undo."""\n...'),
    ])
    runner = MigrationRunner("db", "sqlite:///unused.db", loc)
    got = {rev: runner.is_reversible(rev) for rev in
           ("good", "only_pass", "doc_and_pass", "ellipsis", "raises", "works_then_raises", "missing", "conditional",
            "empty", "empty_doc")}
    assert got == {"good": True, "only_pass": False, "doc_and_pass": False, "ellipsis": False,
                   "raises": False, "works_then_raises": False, "missing": False, "conditional": True,
                   "empty": True, "empty_doc": True}
    assert runner.irreversible("raises") == "its downgrade() raises"
    assert "does nothing" in runner.irreversible("only_pass")
    assert runner.irreversible("missing") == "it has no downgrade()"
    with pytest.raises(InputError, match="nope"):
        runner.is_reversible("nope")


# ----------------------------------------------------------------------- offline SQL, risks


RISKY = [
    ("k1", "op.create_table('items', sa.Column('id', sa.Integer, primary_key=True),"
           " sa.Column('name', sa.String(50)), sa.Column('price', sa.Integer))", "op.drop_table('items')"),
    ("k2", "op.add_column('items', sa.Column('sku', sa.String(20), nullable=False))",
           "op.drop_column('items', 'sku')"),
    ("k3", "op.create_index('ix_items_name', 'items', ['name'])", "op.drop_index('ix_items_name', 'items')"),
    ("k4", "op.alter_column('items', 'price', existing_type=sa.Integer, nullable=False)",
           "op.alter_column('items', 'price', existing_type=sa.Integer, nullable=True)"),
    ("k5", "op.drop_column('items', 'name')", "op.add_column('items', sa.Column('name', sa.String(50)))"),
    ("k6", "op.add_column('items', sa.Column('state', sa.String(8), nullable=False, server_default='new'))",
           "op.drop_column('items', 'state')"),
]


def test_offline_sql_and_risks_on_postgresql(tmp_path: Path) -> None:
    # A closed port: rendering offline SQL must not try to connect.
    url = f"postgresql+psycopg://admin:pw@127.0.0.1:{closed_port()}/shop"
    runner = MigrationRunner("shop-db", url, make_scripts(tmp_path / "s", RISKY))
    sql = runner.offline_sql("k1", "k6")
    assert "ALTER TABLE items ADD COLUMN sku VARCHAR(20) NOT NULL" in sql
    assert "CREATE INDEX ix_items_name ON items (name)" in sql
    assert "ALTER TABLE items DROP COLUMN name" in sql
    assert "CREATE TABLE items" not in sql  # starts after k1
    found = "\n".join(runner.risks(sql))
    assert "DROP COLUMN items.name" in found
    assert "ADD COLUMN items.sku NOT NULL without DEFAULT" in found
    assert "CREATE INDEX ix_items_name ON items without CONCURRENTLY" in found
    assert "items.price SET NOT NULL" in found
    assert "state" not in found  # NOT NULL with a server default is fine
    assert len(runner.risks(sql)) == 4

    # The same SQL from base: everything happens to a table created in it, nothing is at risk
    # except the column drop.
    fresh = risks(runner.offline_sql(None, "k6"), "postgresql")
    assert fresh == ["DROP COLUMN items.name: deletes the column and its data"]

    # Downgrading to base drops the table.
    down = runner.offline_sql("k6", None)
    assert "DROP TABLE items" in down
    assert any(r.startswith("DROP TABLE items") for r in risks(down, "postgresql"))
    assert not any("alembic_version" in r for r in risks(down, "postgresql"))


def test_risks_are_dialect_aware() -> None:
    sql = "CREATE INDEX ix_a ON a (b);\nCREATE INDEX CONCURRENTLY ix_c ON a (c);\n"
    assert risks(sql, "sqlite") == []
    assert len(risks(sql, "postgresql")) == 1 and "ix_a" in risks(sql, "postgresql")[0]
    batch = ("CREATE TABLE _alembic_tmp_users (id INTEGER);\nINSERT INTO _alembic_tmp_users SELECT id FROM users;\n"
             "DROP TABLE users;\nALTER TABLE _alembic_tmp_users RENAME TO users;\n")
    assert risks(batch, "sqlite") == []  # SQLite batch mode's copy-and-rename is not a data loss
    assert risks('ALTER TABLE "t" DROP COLUMN "c", ADD COLUMN d INT NOT NULL', "postgresql") == [
        "DROP COLUMN t.c: deletes the column and its data",
        "ADD COLUMN t.d NOT NULL without DEFAULT: fails on a table that has rows",
    ]


# ---------------------------------------------------------------------------- archive


def test_archive_restore_then_downgrade_after_the_files_are_gone(tmp_path: Path) -> None:
    repo = tmp_path / "repo" / "migrations" / "accounts"
    shutil.copytree(DEMO["accounts"], repo, ignore=shutil.ignore_patterns("__pycache__"))
    url = f"sqlite:///{tmp_path / 'accounts.db'}"
    runner = MigrationRunner("accounts-db", url, repo)
    apply_all(runner, None, "a3_sessions")
    files = archive(repo)
    assert set(files) == {"env.py", "script.py.mako", "versions/a1_users.py",
                          "versions/a2_email.py", "versions/a3_sessions.py"}

    # The repository is checked out at an older commit: the newer revisions are gone.
    (repo / "versions" / "a3_sessions.py").unlink()
    (repo / "versions" / "a2_email.py").unlink()
    with pytest.raises(InputError, match=r"accounts-db.*a3_sessions"):
        MigrationRunner("accounts-db", url, repo).hops("a3_sessions", "a1_users")

    restored = restore(files, tmp_path / "restored")
    back = MigrationRunner("accounts-db", url, restored)
    assert runner.current_heads() == ("a3_sessions",)
    apply_all(back, "a3_sessions", "a1_users")
    assert back.current_heads() == ("a1_users",)
    assert set(schema(url)) == {"alembic_version", "users"}
    assert schema(url)["users"] == {"id", "username", "created_at"}
    assert not list(restored.rglob("__pycache__"))


def test_restore_refuses_paths_outside_the_destination(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        restore({"../evil.py": "x"}, tmp_path / "d")
    assert not (tmp_path / "evil.py").exists()


# ------------------------------------------------------------------------- bad input


def test_unknown_target_revision_names_node_and_revision(tmp_path: Path) -> None:
    runner = MigrationRunner("orders-db", f"sqlite:///{tmp_path / 'o.db'}", DEMO["orders"])
    with pytest.raises(InputError, match=r"orders-db.*zz_nope"):
        runner.resolve_target("zz_nope")
    with pytest.raises(InputError, match=r"orders-db.*zz_nope"):
        runner.hops("zz_nope", "o3_status")
    assert runner.resolve_target("o2_items") == "o2_items"
    assert runner.resolve_target("base") is None


def test_not_a_script_directory_names_node_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=rf"billing-db.*{empty}.*no env.py"):
        MigrationRunner("billing-db", "sqlite:///x.db", empty).check_scripts()
    (empty / "env.py").write_text("")
    with pytest.raises(InputError, match=r"billing-db.*no versions"):
        MigrationRunner("billing-db", "sqlite:///x.db", empty).check_scripts()
    with pytest.raises(InputError, match=r"billing-db.*no such directory"):
        MigrationRunner("billing-db", "sqlite:///x.db", tmp_path / "missing").check_scripts()


def test_broken_revision_file_is_input_error(tmp_path: Path) -> None:
    loc = make_scripts(tmp_path / "s", [("r1", "pass", "pass")])
    (loc / "versions" / "r1.py").write_text("revision = 'r1'\ndown_revision = None\ndef upgrade(:\n")
    with pytest.raises(InputError, match=r"billing-db.*cannot load"):
        MigrationRunner("billing-db", "sqlite:///x.db", loc).check_scripts()


def test_multiple_heads_need_an_explicit_target(tmp_path: Path) -> None:
    loc = make_scripts(tmp_path / "s", [("r1", "pass", "pass"), ("r2", "pass", "pass")])
    (loc / "versions" / "r3.py").write_text(
        "revision = 'r3'\ndown_revision = 'r1'\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade():\n    pass\n\ndef downgrade():\n    pass\n"
    )
    runner = MigrationRunner("billing-db", "sqlite:///x.db", loc)
    with pytest.raises(InputError, match=r"billing-db.*multiple heads.*r2, r3"):
        runner.check_scripts()
    with pytest.raises(InputError, match="multiple heads"):
        runner.resolve_target("head")
    runner.check_scripts("r2")
    assert runner.resolve_target("r3") == "r3"


# --------------------------------------------------------------------- missing / unreachable


def test_current_heads_of_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "orders.db"
    runner = MigrationRunner("orders-db", f"sqlite:///{path}", DEMO["orders"])
    assert runner.exists() is False
    assert runner.current_heads() == ()
    assert runner.hops(None, "o3_status")[0].revision == "o1_orders"
    runner.offline_sql(None, "o3_status")
    assert not path.exists() and not path.parent.exists()


def test_unreachable_postgres_never_shows_the_password() -> None:
    secret = "s3cr3t-P@ss/word"
    url = resolve_url(
        f"postgresql://admin:{secret.replace('@', '%40').replace('/', '%2F')}@127.0.0.1:{closed_port()}/shop",
        Path("/"),
    )
    assert url.startswith("postgresql+psycopg://")
    runner = MigrationRunner("orders-db", url, DEMO["orders"])
    for call in (runner.current_heads, lambda: runner.apply_hop(runner.hops(None, "o1_orders")[0])):
        with pytest.raises(StepFailed) as err:
            call()
        text = str(err.value) + "".join(traceback.format_exception(err.value))
        assert "orders-db" in str(err.value) and "***" in str(err.value)
        for form in (secret, "s3cr3t", "P%40ss"):
            assert form not in text
    assert "s3cr3t" not in repr(runner)


# ------------------------------------------------------------------------------- URLs


def test_resolve_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_url("sqlite:///.release/orders.db", tmp_path) == f"sqlite:///{tmp_path}/.release/orders.db"
    assert resolve_url("sqlite:////abs/orders.db", tmp_path) == "sqlite:////abs/orders.db"
    assert resolve_url("sqlite://", tmp_path) == "sqlite://"
    assert resolve_url("postgresql://u@db:5432/x", tmp_path) == "postgresql+psycopg://u@db:5432/x"
    assert resolve_url("postgresql+psycopg://u@db/x", tmp_path) == "postgresql+psycopg://u@db/x"
    monkeypatch.setenv("ORDERS_DB_PASSWORD", "hunter2")
    monkeypatch.setenv("DB_HOST", "db.internal")
    got = resolve_url("postgresql://app:${ORDERS_DB_PASSWORD}@${DB_HOST}/orders", tmp_path)
    assert got == "postgresql+psycopg://app:hunter2@db.internal/orders"
    assert mask_url(got) == "postgresql+psycopg://app:***@db.internal/orders"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.delenv("DB_HOST")
    with pytest.raises(InputError, match="DB_HOST") as err:
        resolve_url("postgresql://app:${ORDERS_DB_PASSWORD}@${DB_HOST}/orders", tmp_path, node="orders-db")
    assert "orders-db" in str(err.value) and "hunter2" not in str(err.value)


def test_merge_archives_keeps_one_file_per_revision() -> None:
    from orchestrator.migrations import merge_archives

    old = {"env.py": "old", "versions/o3.py": 'revision = "o3"\n', "versions/o4_bad.py": 'revision = "o4_bad"\n'}
    new = {"env.py": "new", "versions/o3_renamed.py": 'revision = "o3"\n', "versions/o4.py": 'revision = "o4"\n'}
    assert merge_archives(old, new) == {**new, "versions/o4_bad.py": 'revision = "o4_bad"\n'}


# ------------------------------------------------------- autocommit_block(): CONCURRENTLY

# CREATE INDEX CONCURRENTLY cannot run in a transaction: Alembic's autocommit_block() commits
# the revision's work so far, runs the block outside any, and begins another for the rest.
CONCURRENT = [
    ("r1", "op.create_table('t', sa.Column('id', sa.Integer, primary_key=True), sa.Column('x', sa.Integer))",
     "op.drop_table('t')"),
    ("r2", """
        op.add_column('t', sa.Column('y', sa.Integer))
        with op.get_context().autocommit_block():
            op.create_index('ix_t_x', 't', ['x'], postgresql_concurrently=True)
        op.add_column('t', sa.Column('z', sa.Integer))
        """, """
        with op.get_context().autocommit_block():
            op.drop_index('ix_t_x', 't', postgresql_concurrently=True)
        op.drop_column('t', 'z')
        op.drop_column('t', 'y')
        """),
]


def indexes(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return {i["name"] for i in sa.inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def test_a_revision_with_an_autocommit_block_applies_and_reverts(tmp_path: Path, db_url: str) -> None:
    runner = MigrationRunner("shop-db", db_url, make_scripts(tmp_path / "scripts", CONCURRENT))
    assert runner.apply_hops(runner.hops(None, "r2")) == ("r2",)
    assert schema(db_url)["t"] == {"id", "x", "y", "z"} and indexes(db_url, "t") == {"ix_t_x"}
    assert runner.apply_hops(runner.hops("r2", "r1")) == ("r1",)
    assert schema(db_url)["t"] == {"id", "x"} and indexes(db_url, "t") == set()


def test_a_failure_after_an_autocommit_block_says_the_revision_may_be_half_applied(
        tmp_path: Path, db_url: str) -> None:
    up = textwrap.dedent(CONCURRENT[1][1]) + "op.execute('SELECT no_such_column FROM t')\n"
    runner = MigrationRunner("shop-db", db_url, make_scripts(tmp_path / "scripts", [CONCURRENT[0], ("r2", up, None)]))
    with pytest.raises(StepFailed, match=r"(?s)shop-db.*r2.*autocommit_block.*MAY BE HALF-APPLIED.*says r1"):
        runner.apply_hops(runner.hops(None, "r2"))
    # What came before the block is in (Alembic committed it there), what came after is not.
    assert runner.current_heads() == ("r1",)
    assert schema(db_url)["t"] == {"id", "x", "y"} and indexes(db_url, "t") == {"ix_t_x"}


def test_an_autocommit_block_waits_for_the_go_before_it_commits(tmp_path: Path, db_url: str) -> None:
    """The block's commit is the revision's first: it must wait, like the last one, for the
    journal's intent; told not to go, the revision is rolled back whole."""
    from concurrent.futures import Future

    from orchestrator.migrations.session import HopSession

    runner = MigrationRunner("shop-db", db_url, make_scripts(tmp_path / "scripts", CONCURRENT))
    runner.apply_hops(runner.hops(None, "r1"))
    go: Future[bool] = Future()

    session = HopSession(runner)
    done = session.submit(runner.hops("r1", "r2")[0], go=go)
    serve_saying_no(session, go, lambda sql: "ADD COLUMN y" in sql)
    with pytest.raises(StepFailed, match="called off before its autocommit_block"):
        done.result()
    assert runner.current_heads() == ("r1",)
    assert schema(db_url)["t"] == {"id", "x"} and indexes(db_url, "t") == set()
