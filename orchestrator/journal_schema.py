"""The journal's tables and their versioning. Their history is the Alembic scripts in
`journal_migrations/`; the tables below are what the code reads and writes, and are exactly the
newest revision there (a test compares them): a new journal is created from them.

Every project's records carry its id (`project`), so that several projects can share one journal.
Records written before projects were recorded have the id UNCLAIMED until a project adopts them.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from .errors import JournalError
from .secrets import mask_url

MIGRATIONS = Path(__file__).parent / "journal_migrations"
UNCLAIMED = ""  # the project of records older than projects (see adopt_unclaimed)
SCHEMA_ADVISORY_KEY = 0x72656C66  # creating or upgrading the journal's schema, never a release lock
# The revisions of `journal_migrations/versions/`, oldest first (a test holds this to the scripts).
# Opening a journal at the newest one reads one row; Alembic is imported only to upgrade.
REVISIONS = ("j0001", "j0002", "j0003")
HEAD = REVISIONS[-1]


def _project() -> sa.Column:
    return sa.Column("project", sa.String(255), nullable=False, server_default=UNCLAIMED)


md = sa.MetaData()
releases = sa.Table(
    "releases", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False), sa.Column("state", sa.String(16), nullable=False),
    sa.Column("revert_state", sa.String(16)), sa.Column("previous", sa.String(128)),
    sa.Column("started_at", sa.Float, nullable=False), sa.Column("finished_at", sa.Float),
    sa.Column("hostname", sa.String(255)), sa.Column("pid", sa.Integer),
    sa.Column("proc_start", sa.Float), sa.Column("manifests", sa.Text, nullable=False), sa.Column("message", sa.Text),
    sa.Column("pid_ns", sa.BigInteger), _project(),
    sa.Index("ix_releases_project", "project"),
)
# A project's steps and archives are those of its releases.
steps = sa.Table(
    "steps", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), nullable=False, index=True),
    sa.Column("phase", sa.String(8), nullable=False),
    sa.Column("node", sa.String(128), nullable=False), sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("host", sa.String(128)),
    sa.Column("action", sa.String(16), nullable=False), sa.Column("revision", sa.String(64)),
    sa.Column("before", sa.String(128)), sa.Column("after", sa.String(128)),
    sa.Column("status", sa.String(16), nullable=False), sa.Column("exit_code", sa.Integer),
    sa.Column("stdout", sa.Text), sa.Column("stderr", sa.Text), sa.Column("detail", sa.Text),
    sa.Column("started_at", sa.Float, nullable=False), sa.Column("ended_at", sa.Float),
)
archives = sa.Table(
    "archives", md,
    sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), primary_key=True),
    sa.Column("node", sa.String(128), primary_key=True), sa.Column("files", sa.Text, nullable=False),
)
current_versions = sa.Table(
    "current_versions", md,
    sa.Column("project", sa.String(255), server_default=UNCLAIMED),
    sa.Column("node", sa.String(128)), sa.Column("host", sa.String(128)),
    sa.Column("version", sa.String(128), nullable=False), sa.Column("release_id", sa.Integer),
    sa.PrimaryKeyConstraint("project", "node", "host", name="pk_current_versions"),
)
lock_table = sa.Table(  # one row per project whose lock is held
    "lock", md,
    sa.Column("project", sa.String(255), server_default=UNCLAIMED),
    sa.Column("id", sa.Integer),  # unused since locks are per project; rows inserted by hand may set it
    sa.Column("lock_id", sa.String(64), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False), sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("proc_start", sa.Float), sa.Column("command", sa.String(255), nullable=False),
    sa.Column("since", sa.Float, nullable=False), sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("pid_ns", sa.BigInteger), sa.Column("run_id", sa.String(64)),
    sa.PrimaryKeyConstraint("project", name="pk_lock"),
)
events = sa.Table(
    "events", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True), sa.Column("ts", sa.Float, nullable=False),
    sa.Column("release_id", sa.Integer), sa.Column("event", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text), _project(),
)
# Alembic's own table, as `alembic upgrade` creates it: a new journal is created at the newest
# revision from the tables above (Alembic's "create_all, then stamp head") without importing Alembic.
alembic_version = sa.Table(
    "alembic_version", sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)

# A run writes two of these per step: built once, they are compiled once, where building each
# anew cost more of the writer's time than executing it.
INSERT_STEP = steps.insert()
FINISH_STEP = steps.update().where(steps.c.id == sa.bindparam("step_id"))  # SET: the columns given
DROP_VERSION = current_versions.delete().where(
    current_versions.c.project == sa.bindparam("v_project"), current_versions.c.node == sa.bindparam("v_node"),
    current_versions.c.host == sa.bindparam("v_host"))
INSERT_VERSION = current_versions.insert()


def prepare(engine: sa.Engine, url: str, *, create: bool) -> None:
    """Refuse a database that is not a journal, or one of a newer version; bring an older
    journal up to date. An empty database becomes a journal only when `create`."""
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        heads = _stored_heads(conn) if "alembic_version" in tables else []
    if tables and ("alembic_version" not in tables or "releases" not in tables):
        raise JournalError(f"journal {mask_url(url)}: is not a journal (tables: {', '.join(sorted(tables))})")
    unknown = [h for h in heads if h not in REVISIONS]
    if unknown:
        raise JournalError(
            f"journal {mask_url(url)}: schema revision {', '.join(unknown)} is newer than this "
            "release tool knows; upgrade the tool"
        )
    if not tables and create and not _create(engine):
        return prepare(engine, url, create=create)  # another run created it meanwhile: check it
    # Read-only commands upgrade an older journal too: they read today's columns.
    if tables and heads != [HEAD]:
        _upgrade(engine)


def _create(engine: sa.Engine) -> bool:
    """A new journal at the newest revision, in one transaction; False when another process
    created its tables first."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_ADVISORY_KEY})
        if sa.inspect(conn).get_table_names():
            return False
        md.create_all(conn)
        alembic_version.create(conn)
        conn.execute(alembic_version.insert().values(version_num=HEAD))
    return True


def _stored_heads(conn: sa.Connection) -> list[str]:
    """The journal's schema revisions as Alembic stores them (one row per head)."""
    return [row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]


def _upgrade(engine: sa.Engine) -> None:
    from alembic import command as alembic_command  # most of start-up: paid only to upgrade
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two first runs at once on a fresh journal: one creates the schema, the other
            # waits here and then finds it at head.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_ADVISORY_KEY})
        cfg.attributes["connection"] = conn
        alembic_command.upgrade(cfg, "head")


def adopt_unclaimed(engine: sa.Engine, project: str) -> None:
    """Records from before projects (UNCLAIMED) become `project`'s: the first project to open a
    journal with this version adopts them. An unclaimed lock row or current version whose key the
    project already has stays unclaimed rather than clash with it."""
    keyed = ((current_versions, ("node", "host")), (lock_table, ()))
    tables = (releases, events, *(t for t, _ in keyed))
    with engine.connect() as conn:
        if not any(conn.execute(sa.select(t.c.project).where(t.c.project == UNCLAIMED).limit(1)).first()
                   for t in tables):
            return
    with engine.begin() as conn:
        for table in (releases, events):
            conn.execute(table.update().where(table.c.project == UNCLAIMED).values(project=project))
        for table, key in keyed:
            mine = table.alias()
            clash = sa.exists().where(mine.c.project == project, *(mine.c[k] == table.c[k] for k in key))
            conn.execute(table.update().where(table.c.project == UNCLAIMED, ~clash).values(project=project))
