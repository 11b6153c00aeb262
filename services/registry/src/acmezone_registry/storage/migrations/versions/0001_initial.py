"""Initial schema: registrations, TXT values, the record feed.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

from acmezone_common.sql import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    feed_state = op.create_table(
        "feed_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feed_id", sa.String(36), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("compacted_revision", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(
        feed_state,
        [{"id": 1, "feed_id": str(uuid.uuid4()), "revision": 0, "compacted_revision": 0}],
    )
    op.create_table(
        "registrations",
        sa.Column("subdomain", sa.String(63), primary_key=True),
        sa.Column("username", sa.String(36), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("allowed_cidrs", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("max_txt_values", sa.Integer(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
    )
    op.create_index(
        "ix_registrations_create_time_subdomain", "registrations", ["create_time", "subdomain"]
    )
    op.create_table(
        "txt_values",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "subdomain",
            sa.String(63),
            sa.ForeignKey("registrations.subdomain", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("subdomain", "value", name="uq_txt_values_subdomain_value"),
    )
    op.create_index("ix_txt_values_expire_time", "txt_values", ["expire_time"])
    op.create_table(
        "record_changes",
        sa.Column("revision", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("change_type", sa.String(8), nullable=False),
        sa.Column("fqdn", sa.String(255), nullable=False),
        sa.Column("txt_values", sa.JSON(), nullable=False),
        sa.Column("commit_time", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("record_changes")
    op.drop_index("ix_txt_values_expire_time", table_name="txt_values")
    op.drop_table("txt_values")
    op.drop_index("ix_registrations_create_time_subdomain", table_name="registrations")
    op.drop_table("registrations")
    op.drop_table("feed_state")
