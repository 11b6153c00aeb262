"""The registration count kept in feed_state, so no periodic job counts the table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.add_column(
            sa.Column("registration_count", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE feed_state SET registration_count = (SELECT count(*) FROM registrations)")


def downgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.drop_column("registration_count")
