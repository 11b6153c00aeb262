"""Delivery targets: what each agent last reported installing, for the fleet view.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_targets",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("certificate_id", sa.String(63), nullable=False, index=True),
        sa.Column("target_id", sa.String(63), nullable=False),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("directory", sa.String(1024), nullable=False),
        sa.Column("serial_number", sa.String(64), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("install_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hook_result", sa.String(16), nullable=False),
        sa.Column("hook_exit_code", sa.Integer, nullable=False),
        sa.Column("hook_output_tail", sa.Text, nullable=False),
        sa.Column("report_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("certificate_id", "target_id"),
    )


def downgrade() -> None:
    op.drop_table("delivery_targets")
