"""add orders.status

Revision ID: o3_status
Revises: o2_items
Create Date: 2024-03-18 11:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "o3_status"
down_revision: Union[str, Sequence[str], None] = "o2_items"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # The server default fills existing rows, so NOT NULL holds without a backfill step.
    op.add_column(
        "orders",
        sa.Column("status", sa.String(16), nullable=False, server_default="new"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("orders", "status")
