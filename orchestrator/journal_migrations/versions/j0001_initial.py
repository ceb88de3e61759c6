"""The journal: releases, steps (intent and outcome), archives, current versions, the lock.

Revision ID: j0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "j0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("revert_state", sa.String(16)),
        sa.Column("previous", sa.String(128)),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("hostname", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("proc_start", sa.Float),
        sa.Column("manifests", sa.Text, nullable=False),
        sa.Column("message", sa.Text),
    )
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), nullable=False, index=True),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("host", sa.String(128)),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("revision", sa.String(64)),
        sa.Column("before", sa.String(128)),
        sa.Column("after", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("stdout", sa.Text),
        sa.Column("stderr", sa.Text),
        sa.Column("detail", sa.Text),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
    )
    op.create_table(
        "archives",
        sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), primary_key=True),
        sa.Column("node", sa.String(128), primary_key=True),
        sa.Column("files", sa.Text, nullable=False),
    )
    op.create_table(
        "current_versions",
        sa.Column("node", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("release_id", sa.Integer),
    )
    op.create_table(
        "lock",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("lock_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("proc_start", sa.Float),
        sa.Column("command", sa.String(255), nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("release_id", sa.Integer),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text),
    )


def downgrade() -> None:
    for table in ("events", "lock", "current_versions", "archives", "steps", "releases"):
        op.drop_table(table)
