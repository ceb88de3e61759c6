"""Projects: one journal shared by several projects keeps each one's releases, current versions,
lock and events apart. Every release, event, current version and lock row names its project.

Rows from before get the project '' (unclaimed): the first project that opens the journal with
this version adopts them (journal_schema.adopt_unclaimed), which for a journal used by one project
(every journal before this revision, if used as meant) is the project that wrote them.

Revision ID: j0003
Revises: j0002
"""
import sqlalchemy as sa
from alembic import op

revision = "j0003"
down_revision = "j0002"
branch_labels = None
depends_on = None

UNCLAIMED = ""
LOCK_COLUMNS = ["lock_id", "owner", "hostname", "pid", "proc_start", "command", "since", "heartbeat",
                "pid_ns", "run_id"]


def _project() -> sa.Column:
    return sa.Column("project", sa.String(255), nullable=False, server_default=UNCLAIMED)


def _versions_columns() -> list[sa.Column]:
    return [
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("release_id", sa.Integer),
    ]


def _lock_columns() -> list[sa.Column]:
    return [
        sa.Column("lock_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("proc_start", sa.Float),
        sa.Column("command", sa.String(255), nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
        sa.Column("pid_ns", sa.BigInteger),
        sa.Column("run_id", sa.String(64)),
    ]


def _rebuild(name: str, columns: list, key: sa.PrimaryKeyConstraint, copy: list[str], select=None) -> None:
    """Replace table `name` by one with `columns` and primary `key`, keeping its rows: the same on
    SQLite, which cannot change a primary key in place, and on PostgreSQL (where the key's name
    must differ from the old table's, both existing for a moment)."""
    op.create_table(f"{name}_new", *columns, key)
    old = sa.table(name, *(sa.column(c) for c in copy))
    new = sa.table(f"{name}_new", *(sa.column(c) for c in copy))
    op.execute(new.insert().from_select(copy, select if select is not None else sa.select(*old.c)))
    op.drop_table(name)
    op.rename_table(f"{name}_new", name)


def upgrade() -> None:
    op.add_column("releases", _project())
    op.create_index("ix_releases_project", "releases", ["project"])
    op.add_column("events", _project())
    _rebuild("current_versions", [_project(), *_versions_columns()],
             sa.PrimaryKeyConstraint("project", "node", "host", name="pk_current_versions"),
             ["node", "host", "version", "release_id"])
    # The lock: a row per project, keyed by it; `id` (always 1 before) is kept, unused.
    _rebuild("lock", [_project(), sa.Column("id", sa.Integer), *_lock_columns()],
             sa.PrimaryKeyConstraint("project", name="pk_lock"), ["id", *LOCK_COLUMNS])


def downgrade() -> None:
    # Back to one project per journal: meaningful only for a journal one project used.
    cv = sa.table("current_versions", *(sa.column(c) for c in ("node", "host", "version", "release_id")))
    _rebuild("current_versions", _versions_columns(),
             sa.PrimaryKeyConstraint("node", "host", name="current_versions_pkey"),
             ["node", "host", "version", "release_id"],
             sa.select(cv.c.node, cv.c.host, sa.func.max(cv.c.version), sa.func.max(cv.c.release_id))
             .group_by(cv.c.node, cv.c.host))
    lock = sa.table("lock", *(sa.column(c) for c in ["id", *LOCK_COLUMNS]))
    _rebuild("lock", [sa.Column("id", sa.Integer, nullable=False), *_lock_columns()],
             sa.PrimaryKeyConstraint("id", name="lock_pkey"), ["id", *LOCK_COLUMNS],
             sa.select(sa.literal(1), *(lock.c[c] for c in LOCK_COLUMNS)).limit(1))
    with op.batch_alter_table("events") as batch:
        batch.drop_column("project")
    op.drop_index("ix_releases_project", "releases")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("project")
