"""Seal the stored TSIG secrets with AES-GCM under the registry's encryption key.

Needs the key (handed in by `migrate.upgrade` as the `sealer` attribute) only when there are
secrets still in plain text; the column keeps its type, the values become `sealed-v1:...`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from acmezone_common.sealing import SecretSealer, is_sealed

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ROWS = sa.text("SELECT key_name, secret FROM tsig_keys")
_SET = sa.text("UPDATE tsig_keys SET secret = :secret WHERE key_name = :key_name")


def _sealer(doing: str) -> SecretSealer:
    sealer = context.config.attributes.get("sealer")
    if not isinstance(sealer, SecretSealer):
        raise RuntimeError(f"{doing} TSIG secrets needs the registry's encryption key")
    return sealer


def upgrade() -> None:
    bind = op.get_bind()
    plain = [(name, secret) for name, secret in bind.execute(_ROWS) if not is_sealed(secret)]
    if plain:
        sealer = _sealer("sealing")
        bind.execute(
            _SET,
            [{"key_name": name, "secret": sealer.seal(secret, name)} for name, secret in plain],
        )


def downgrade() -> None:
    bind = op.get_bind()
    sealed = [(name, secret) for name, secret in bind.execute(_ROWS) if is_sealed(secret)]
    if sealed:
        sealer = _sealer("opening")
        bind.execute(
            _SET,
            [{"key_name": name, "secret": sealer.open(secret, name)} for name, secret in sealed],
        )
