"""A covering index for reading an owner name's values in order (the feed snapshot's read).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_txt_values_snapshot_order",
        "txt_values",
        ["subdomain", "owner", "create_time", "id", "value"],
    )


def downgrade() -> None:
    op.drop_index("ix_txt_values_snapshot_order", table_name="txt_values")
