"""The issuer's schema as SQLAlchemy 2.0 typed ORM classes. The Alembic migrations in
`migrations/` mirror it; rows leave the repository detached, so callers read them as plain
records.
"""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired, TypedDict

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from acmezone_common.sql import UtcDateTime


class DelegationStatus(TypedDict):
    """A delegation as last checked, kept in the certificate row (JSON): the CNAME, or for
    dns-persist-01 the TXT record, that lets the issuer answer for one domain."""

    domain: str
    challenge_type: NotRequired[str]  # older rows may lack it: read as dns-01
    cname_name: str
    cname_target: str
    ready: bool
    detail: str
    check_time: str  # ISO 8601, UTC
    txt_value: NotRequired[str]
    persist_until: NotRequired[str | None]  # ISO 8601; dns-persist-01 only


class Base(DeclarativeBase):
    """Declarative base of the issuer's tables."""


class AccountRow(Base):
    """An ACME account; `sealed_key` is the account key sealed by `keys.KeySealer`."""

    __tablename__ = "accounts"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(63), unique=True)
    directory_url: Mapped[str] = mapped_column(String(2048))
    contact_emails: Mapped[list[str]] = mapped_column(JSON)
    terms_agreed: Mapped[bool] = mapped_column(Boolean)
    terms_url: Mapped[str] = mapped_column(String(2048), default="")
    eab_key_id: Mapped[str] = mapped_column(String(255), default="")
    key_type: Mapped[str] = mapped_column(String(16))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    account_url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class CertificateRow(Base):
    """A certificate resource with everything the reconciler needs to resume it."""

    __tablename__ = "certificates"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(63), unique=True)
    dns_names: Mapped[list[str]] = mapped_column(JSON)
    account_id: Mapped[str] = mapped_column(String(63), ForeignKey("accounts.id"))
    key_type: Mapped[str] = mapped_column(String(16))
    profile: Mapped[str] = mapped_column(String(64), default="")
    challenge_type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32), default="")
    conditions: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    delegations: Mapped[list[DelegationStatus]] = mapped_column(JSON, default=list)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    next_attempt_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    order_url: Mapped[str] = mapped_column(String(2048), default="")
    attempt_start_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    sealed_pending_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sealed_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    chain_pem: Mapped[str] = mapped_column(Text, default="")
    serial_number: Mapped[str] = mapped_column(String(64), default="")
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    renewal_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    renewal_source: Mapped[str] = mapped_column(String(16), default="")
    issue_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoke_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    renew_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    lease_owner: Mapped[str] = mapped_column(String(255), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)


class OrderRow(Base):
    """Every ACME order placed, so "one order per attempt" can be checked and audited."""

    __tablename__ = "orders"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[str] = mapped_column(String(63), index=True)
    order_url: Mapped[str] = mapped_column(String(2048))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class Http01TokenRow(Base):
    """An HTTP-01 key authorization being served, readable by every replica."""

    __tablename__ = "http01_tokens"

    token: Mapped[str] = mapped_column(String(255), primary_key=True)
    key_authorization: Mapped[str] = mapped_column(String(512))
    certificate_id: Mapped[str] = mapped_column(String(63), index=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class DelegationRow(Base):
    """The registry registration held for one base domain, kept across renewals."""

    __tablename__ = "delegations"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    registration_name: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(64))
    sealed_password: Mapped[bytes] = mapped_column(LargeBinary)
    fulldomain: Mapped[str] = mapped_column(String(253))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryTokenRow(Base):
    """A delivery token: its scope and the SHA-256 of its secret (the secret is never stored)."""

    __tablename__ = "delivery_tokens"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(63), unique=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    certificate_ids: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(256), default="")
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryTargetRow(Base):
    """What an agent last reported installing into one directory of one host."""

    __tablename__ = "delivery_targets"
    __table_args__ = (UniqueConstraint("certificate_id", "target_id"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[str] = mapped_column(String(63), index=True)
    target_id: Mapped[str] = mapped_column(String(63))
    host: Mapped[str] = mapped_column(String(253))
    directory: Mapped[str] = mapped_column(String(1024))
    serial_number: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[datetime] = mapped_column(UtcDateTime)
    install_time: Mapped[datetime] = mapped_column(UtcDateTime)
    hook_result: Mapped[str] = mapped_column(String(16))
    hook_exit_code: Mapped[int] = mapped_column(Integer, default=0)
    hook_output_tail: Mapped[str] = mapped_column(Text, default="")
    report_time: Mapped[datetime] = mapped_column(UtcDateTime)
