"""HTTP-01 key authorizations, so every replica behind one address can answer the CA.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "http01_tokens",
        sa.Column("token", sa.String(255), primary_key=True),
        sa.Column("key_authorization", sa.String(512), nullable=False),
        sa.Column("certificate_id", sa.String(63), nullable=False, index=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("http01_tokens")
