"""Persistent TXT values (dns-persist-01), kept apart from challenge values.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("txt_values") as batch:
        batch.add_column(
            sa.Column("persistent", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("txt_values") as batch:
        batch.drop_column("persistent")
