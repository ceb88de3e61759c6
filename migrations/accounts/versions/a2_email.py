"""add users.email

Revision ID: a2_email
Revises: a1_users
Create Date: 2024-02-12 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "a2_email"
down_revision: Union[str, Sequence[str], None] = "a1_users"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Nullable: existing users have no address yet, and a NOT NULL column without a default
    # would fail on a table that has rows.
    op.add_column("users", sa.Column("email", sa.String(255), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("users", "email")
