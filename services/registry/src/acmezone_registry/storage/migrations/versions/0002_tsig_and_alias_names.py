"""TSIG keys, the TSIG replay guard, and TXT values at `_acme-challenge.<fulldomain>`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from acmezone_common.sql import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("txt_values") as batch:
        batch.add_column(sa.Column("owner", sa.String(32), nullable=False, server_default=""))
        batch.drop_constraint("uq_txt_values_subdomain_value", type_="unique")
        batch.create_unique_constraint(
            "uq_txt_values_subdomain_owner_value", ["subdomain", "owner", "value"]
        )
    op.create_table(
        "tsig_keys",
        sa.Column(
            "subdomain",
            sa.String(63),
            sa.ForeignKey("registrations.subdomain", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key_id", sa.String(63), primary_key=True),
        sa.Column("key_name", sa.String(255), nullable=False, unique=True),
        sa.Column("algorithm", sa.String(40), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "tsig_replay_guard",
        sa.Column("mac_digest", sa.String(64), primary_key=True),
        sa.Column("expire_time", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_tsig_replay_guard_expire_time", "tsig_replay_guard", ["expire_time"])


def downgrade() -> None:
    op.drop_index("ix_tsig_replay_guard_expire_time", table_name="tsig_replay_guard")
    op.drop_table("tsig_replay_guard")
    op.drop_table("tsig_keys")
    with op.batch_alter_table("txt_values") as batch:
        batch.drop_constraint("uq_txt_values_subdomain_owner_value", type_="unique")
        batch.create_unique_constraint("uq_txt_values_subdomain_value", ["subdomain", "value"])
        batch.drop_column("owner")
