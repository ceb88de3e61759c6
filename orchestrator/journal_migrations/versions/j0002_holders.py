"""Holders that can be found again: the PID namespace of the process that holds the lock or runs a
release (a PID names a process only within its namespace), and the mark its commands carry.

Revision ID: j0002
Revises: j0001
"""
import sqlalchemy as sa
from alembic import op

revision = "j0002"
down_revision = "j0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows from before stay NULL: their namespace is unknown, so they are never judged by PID.
    op.add_column("lock", sa.Column("pid_ns", sa.BigInteger))
    op.add_column("lock", sa.Column("run_id", sa.String(64)))
    op.add_column("releases", sa.Column("pid_ns", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("pid_ns")
    with op.batch_alter_table("lock") as batch:
        batch.drop_column("run_id")
        batch.drop_column("pid_ns")
