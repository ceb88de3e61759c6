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


def _project() -> sa.Column:
    return sa.Column("project", sa.String(255), nullable=False, server_default=UNCLAIMED)


def _rebuild(name: str, key: list[str], key_name: str, *, project: bool, select=None) -> None:
    """Replace table `name` by a copy keyed by `key`, with or without a `project` column, keeping
    its rows (those `select` picks from it, when given): the same on SQLite, which cannot change
    a primary key in place, and on PostgreSQL, where `key_name` must differ from the old key's."""
    old = sa.Table(name, sa.MetaData(), autoload_with=op.get_bind())
    kept = [c.name for c in old.columns if c.name != "project"]
    columns = [sa.Column(c.name, c.type, nullable=c.name not in key and (c.nullable or c.primary_key))
               for c in old.columns if c.name in kept]
    op.create_table(f"{name}_new", *([_project()] if project else []), *columns,
                    sa.PrimaryKeyConstraint(*key, name=key_name))
    new = sa.table(f"{name}_new", *(sa.column(c) for c in kept))
    op.execute(new.insert().from_select(kept, select if select is not None else sa.select(*(old.c[c] for c in kept))))
    op.drop_table(name)
    op.rename_table(f"{name}_new", name)


def upgrade() -> None:
    op.add_column("releases", _project())
    op.create_index("ix_releases_project", "releases", ["project"])
    op.add_column("events", _project())
    _rebuild("current_versions", ["project", "node", "host"], "pk_current_versions", project=True)
    # The lock: a row per project, keyed by it; `id` (always 1 before) is kept, unused.
    _rebuild("lock", ["project"], "pk_lock", project=True)


def downgrade() -> None:
    # Back to one project per journal: meaningful only for a journal one project used.
    cv = sa.table("current_versions", *(sa.column(c) for c in ("node", "host", "version", "release_id")))
    _rebuild("current_versions", ["node", "host"], "current_versions_pkey", project=False,
             select=sa.select(cv.c.node, cv.c.host, sa.func.max(cv.c.version), sa.func.max(cv.c.release_id))
             .group_by(cv.c.node, cv.c.host))
    held = sa.Table("lock", sa.MetaData(), autoload_with=op.get_bind())
    _rebuild("lock", ["id"], "lock_pkey", project=False,
             select=sa.select(*(sa.literal(1) if c.name == "id" else c for c in held.columns if c.name != "project"))
             .limit(1))
    with op.batch_alter_table("events") as batch:
        batch.drop_column("project")
    op.drop_index("ix_releases_project", "releases")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("project")
