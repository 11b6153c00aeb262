"""A certificate's status conditions (Ready, Issuing, DelegationReady), derived from its record.

cert-manager's shape: each condition is a type, a True/False status, a CamelCase reason and a
sentence, with the time its status last changed. They are recomputed from the row on every write
rather than set by hand at each step, so they can never disagree with the state they describe;
the transition time is kept while a condition's status stays the same, so "Ready since" means
what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from acmezone_issuer.challenges import DNS_METHODS, ChallengeType
from acmezone_issuer.names import base_domain
from acmezone_issuer.states import CertificateState, Stage
from acmezone_issuer.storage.tables import CertificateRow


class ConditionType(StrEnum):
    """The conditions a certificate reports."""

    READY = "Ready"
    ISSUING = "Issuing"
    DELEGATION_READY = "DelegationReady"


class ConditionStatus(StrEnum):
    """A condition's status as stored (the servicer maps it to `ConditionStatus`)."""

    TRUE = "True"
    FALSE = "False"


@dataclass(frozen=True)
class Condition:
    """One condition; `last_transition_time` is ISO 8601, as it is stored."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: str

    def as_json(self) -> dict[str, str]:
        """The stored form (the row's `conditions` column holds a list of these)."""
        return {
            "type": str(self.type),
            "status": str(self.status),
            "reason": self.reason,
            "message": self.message,
            "last_transition_time": self.last_transition_time,
        }


@dataclass(frozen=True)
class _Verdict:
    status: ConditionStatus
    reason: str
    message: str


_T, _F = ConditionStatus.TRUE, ConditionStatus.FALSE
_REVOKED = _Verdict(_F, "Revoked", "the certificate was revoked on request")


def delegation_methods(challenge_type: str) -> tuple[ChallengeType, ...]:
    """The delegated DNS methods a certificate's setting may use (none for http-01)."""
    if challenge_type == ChallengeType.AUTO:
        return DNS_METHODS
    if challenge_type in (*DNS_METHODS, ChallengeType.DNS_PERSIST01):
        return (ChallengeType(challenge_type),)
    return ()


def missing_delegations(row: CertificateRow) -> list[str]:
    """The CNAMEs still needed before ordering: every checked one for dns-01 and
    dns-account-01; for `auto`, one per domain that has a wildcard name (the others can fall
    back to HTTP-01) and no ready CNAME of either kind."""
    delegations = row.delegations or []
    if row.challenge_type != ChallengeType.AUTO:
        return [d["cname_name"] for d in delegations if not d["ready"]]
    wildcard_domains = {base_domain(n) for n in row.dns_names if n.startswith("*.")}
    missing = []
    for domain in sorted(wildcard_domains):
        checks = [d for d in delegations if d["domain"] == domain]
        if checks and not any(d["ready"] for d in checks):
            missing += [d["cname_name"] for d in checks]
    return missing


def _ready(row: CertificateRow, now: datetime) -> _Verdict:
    has_valid = bool(row.chain_pem) and row.not_after is not None and row.not_after > now
    failure = row.last_failure or {}
    if row.state == CertificateState.REVOKED:
        return _REVOKED
    if has_valid:
        return _Verdict(_T, "Issued", f"valid until {row.not_after:%Y-%m-%d %H:%M:%SZ}")
    if row.state == CertificateState.FAILED:
        return _Verdict(_F, "Failed", failure.get("message", "the last attempt failed"))
    if row.state == CertificateState.WAITING_FOR_DELEGATION:
        return _Verdict(_F, "WaitingForCNAME", "waiting for _acme-challenge CNAMEs to be added")
    return _Verdict(_F, "NotIssued", "no certificate has been issued yet")


def _issuing(row: CertificateRow) -> _Verdict:
    failure = row.last_failure or {}
    if row.stage != Stage.NONE:
        return _Verdict(_T, "InProgress", f"stage {row.stage}")
    if row.state == CertificateState.FAILED:
        return _Verdict(_F, "Failed", failure.get("message", ""))
    if row.state == CertificateState.WAITING_FOR_DELEGATION:
        return _Verdict(_F, "WaitingForCNAME", "no order is placed until every CNAME resolves")
    return _Verdict(_F, "Idle", "no issuance in progress")


def _delegation(row: CertificateRow) -> _Verdict | None:
    if not (delegation_methods(row.challenge_type) and row.delegations):
        return None
    missing = missing_delegations(row)
    if missing:
        return _Verdict(_F, "WaitingForCNAME", "missing: " + ", ".join(missing))
    return _Verdict(_T, "CNAMEsInPlace", "every CNAME needed resolves")


def _stamp(
    verdicts: list[tuple[ConditionType, _Verdict]], previous: list[dict[str, str]], now: datetime
) -> list[Condition]:
    """Conditions with the transition time kept where the status did not change."""
    before = {c["type"]: c for c in previous}
    result = []
    for ctype, verdict in verdicts:
        old = before.get(ctype)
        since = (
            old["last_transition_time"]
            if old and old["status"] == verdict.status
            else now.isoformat()
        )
        result.append(Condition(ctype, verdict.status, verdict.reason, verdict.message, since))
    return result


def compute_conditions(row: CertificateRow, now: datetime) -> list[Condition]:
    """Ready, Issuing and (for delegated DNS methods, once checked) DelegationReady from the
    row's fields, keeping transition times of conditions whose status did not change."""
    verdicts = [(ConditionType.READY, _ready(row, now)), (ConditionType.ISSUING, _issuing(row))]
    delegation = _delegation(row)
    if delegation is not None:
        verdicts.append((ConditionType.DELEGATION_READY, delegation))
    return _stamp(verdicts, row.conditions or [], now)


def revoked_conditions(row: CertificateRow, now: datetime) -> list[dict[str, str]]:
    """The stored conditions once a certificate is revoked on request: Ready False (Revoked)
    with a fresh transition time, Issuing dropped, any other condition kept as it was."""
    kept = [
        c
        for c in row.conditions or []
        if c["type"] not in (ConditionType.READY, ConditionType.ISSUING)
    ]
    ready = Condition(
        ConditionType.READY, _REVOKED.status, _REVOKED.reason, _REVOKED.message, now.isoformat()
    )
    return [*kept, ready.as_json()]
