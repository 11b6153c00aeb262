"""The registry schema as SQLAlchemy 2.0 typed ORM classes. Alembic migrations mirror it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from acmezone_common.sql import UtcDateTime


class Base(DeclarativeBase):
    """Declarative base of the registry schema."""


class FeedStateRow(Base):
    """The single row (id 1) holding the feed's identity and revision counters. Every writer
    locks it, which serialises revisions."""

    __tablename__ = "feed_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed_id: Mapped[str] = mapped_column(String(36))
    revision: Mapped[int] = mapped_column(BigInteger)
    compacted_revision: Mapped[int] = mapped_column(BigInteger)
    # How many registrations exist, kept by the writers that create and delete them (0005).
    registration_count: Mapped[int] = mapped_column(BigInteger, server_default="0")


class RegistrationRow(Base):
    """One registration; the password only as its hash."""

    __tablename__ = "registrations"
    __table_args__ = (Index("ix_registrations_create_time_subdomain", "create_time", "subdomain"),)

    subdomain: Mapped[str] = mapped_column(String(63), primary_key=True)
    username: Mapped[str] = mapped_column(String(36), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(256))
    max_txt_values: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())


class TxtValueRow(Base):
    """One published TXT value of a registration."""

    __tablename__ = "txt_values"
    __table_args__ = (
        UniqueConstraint("subdomain", "owner", "value", name="uq_txt_values_subdomain_owner_value"),
        Index("ix_txt_values_expire_time", "expire_time"),
        # Every read of an owner name's values in order, the feed snapshot's among them, is
        # answered from this index alone (migration 0004).
        Index("ix_txt_values_snapshot_order", "subdomain", "owner", "create_time", "id", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subdomain: Mapped[str] = mapped_column(
        String(63), ForeignKey("registrations.subdomain", ondelete="CASCADE")
    )
    # The owner name relative to the registration's fulldomain: "" for the fulldomain itself,
    # "_acme-challenge" for `_acme-challenge.<fulldomain>` (written by RFC 2136 updates).
    owner: Mapped[str] = mapped_column(String(32), server_default="")
    value: Mapped[str] = mapped_column(String(255))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    expire_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # A persistent value (dns-persist-01) is kept apart from challenge values: never trimmed to
    # max_txt_values, never given an expire_time.
    persistent: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)


class RecordChangeRow(Base):
    """One change of the record feed; all rows of a transaction share its revision."""

    __tablename__ = "record_changes"

    revision: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    change_type: Mapped[str] = mapped_column(String(8))
    fqdn: Mapped[str] = mapped_column(String(255))
    txt_values: Mapped[list[str]] = mapped_column(JSON)
    commit_time: Mapped[datetime] = mapped_column(UtcDateTime())


class TsigKeyRow(Base):
    """A TSIG key of a registration. The secret must be usable for HMAC, so it cannot be hashed:
    it is sealed with AES-GCM under the registry's encryption key (`sealing`)."""

    __tablename__ = "tsig_keys"

    subdomain: Mapped[str] = mapped_column(
        String(63), ForeignKey("registrations.subdomain", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    key_name: Mapped[str] = mapped_column(String(255), unique=True)
    algorithm: Mapped[str] = mapped_column(String(40))
    secret: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


class TsigReplayGuardRow(Base):
    """The MAC of every accepted signed update until its signature's time window closes: the
    same signed message a second time is a replay."""

    __tablename__ = "tsig_replay_guard"
    __table_args__ = (Index("ix_tsig_replay_guard_expire_time", "expire_time"),)

    mac_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expire_time: Mapped[datetime] = mapped_column(UtcDateTime())
