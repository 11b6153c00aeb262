"""The initial schema: accounts, certificates, orders, delegations.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(63), nullable=False, unique=True),
        sa.Column("directory_url", sa.String(2048), nullable=False),
        sa.Column("contact_emails", sa.JSON, nullable=False),
        sa.Column("terms_agreed", sa.Boolean, nullable=False),
        sa.Column("terms_url", sa.String(2048), nullable=False),
        sa.Column("eab_key_id", sa.String(255), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary, nullable=False),
        sa.Column("account_url", sa.String(2048), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
    )
    op.create_table(
        "certificates",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(63), nullable=False, unique=True),
        sa.Column("dns_names", sa.JSON, nullable=False),
        sa.Column("account_id", sa.String(63), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("challenge_type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("conditions", sa.JSON, nullable=False),
        sa.Column("delegations", sa.JSON, nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("last_failure", sa.JSON, nullable=True),
        sa.Column("next_attempt_time", _TIME, nullable=True, index=True),
        sa.Column("order_url", sa.String(2048), nullable=False),
        sa.Column("attempt_start_time", _TIME, nullable=True),
        sa.Column("sealed_pending_key", sa.LargeBinary, nullable=True),
        sa.Column("sealed_key", sa.LargeBinary, nullable=True),
        sa.Column("chain_pem", sa.Text, nullable=False),
        sa.Column("serial_number", sa.String(64), nullable=False),
        sa.Column("not_before", _TIME, nullable=True),
        sa.Column("not_after", _TIME, nullable=True),
        sa.Column("renewal_time", _TIME, nullable=True),
        sa.Column("renewal_source", sa.String(16), nullable=False),
        sa.Column("issue_time", _TIME, nullable=True),
        sa.Column("revoke_time", _TIME, nullable=True),
        sa.Column("renew_requested", sa.Boolean, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=False),
        sa.Column("lease_until", _TIME, nullable=True),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
    )
    op.create_table(
        "orders",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("certificate_id", sa.String(63), nullable=False, index=True),
        sa.Column("order_url", sa.String(2048), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
    )
    op.create_table(
        "delegations",
        sa.Column("domain", sa.String(253), primary_key=True),
        sa.Column("registration_name", sa.String(255), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("sealed_password", sa.LargeBinary, nullable=False),
        sa.Column("fulldomain", sa.String(253), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("delegations")
    op.drop_table("orders")
    op.drop_table("certificates")
    op.drop_table("accounts")
