"""Keys sealed at rest, name validation, renewal and retry arithmetic."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag

from acmezone_common.errors import InvalidArgumentError
from acmezone_issuer.challenges import (
    ChallengeType,
    challenge_owner,
    dns_account_label,
    parse_persist_value,
    persist_value,
)
from acmezone_issuer.conditions import (
    ConditionStatus,
    ConditionType,
    compute_conditions,
    delegation_methods,
    missing_delegations,
    revoked_conditions,
)
from acmezone_issuer.keys import KeySealer, KeyType, build_csr, generate_key, key_to_pem
from acmezone_issuer.names import base_domain, dns_name_problem, normalise_dns_names
from acmezone_issuer.renewal import lifetime_renewal_time, plan_renewal, retry_delay
from acmezone_issuer.states import CertificateState, RenewalSource, Stage
from acmezone_issuer.storage.tables import CertificateRow


@pytest.mark.parametrize("key_type", list(KeyType)[:3])
def test_keys_are_sealed_and_bound_to_their_row(key_type: str) -> None:
    sealer = KeySealer(b"k" * 32)
    key = generate_key(key_type)
    sealed = sealer.seal_key(key, "certificate/a")
    assert key_to_pem(key) not in sealed
    assert b"PRIVATE KEY" not in sealed
    assert key_to_pem(sealer.open_key(sealed, "certificate/a")) == key_to_pem(key)
    with pytest.raises(InvalidTag):
        sealer.open_key(sealed, "certificate/b")
    with pytest.raises(InvalidTag):
        KeySealer(b"x" * 32).open_key(sealed, "certificate/a")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(InvalidTag):
        sealer.open_key(tampered, "certificate/a")


def test_generated_encryption_key_is_private_and_stable(tmp_path: Path) -> None:
    first = KeySealer.from_setting(None, tmp_path / "data")
    path = tmp_path / "data" / "encryption.key"
    assert path.stat().st_mode & 0o777 == 0o600
    sealed = first.seal(b"secret", "x")
    assert KeySealer.from_setting(None, tmp_path / "data").open(sealed, "x") == b"secret"
    with pytest.raises(ValueError, match="32 bytes"):
        KeySealer.from_setting("c2hvcnQ", tmp_path)


def test_csr_carries_every_name() -> None:
    csr = x509.load_pem_x509_csr(build_csr(generate_key("ecdsa-p256"), ["*.a.test", "a.test"]))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.a.test", "a.test"]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("example.com", True),
        ("*.example.com", True),
        ("xn--bcher-kva.example", True),
        ("*.com", False),
        ("a.*.example.com", False),
        ("*a.example.com", False),
        ("com", False),
        ("192.0.2.1", False),
        ("under_score.example.com", False),
        ("a..example.com", False),
        ("x" * 64 + ".com", False),
        (".".join(["a" * 60] * 5), False),
    ],
)
def test_dns_names(name: str, ok: bool) -> None:
    assert (dns_name_problem(name) is None) is ok


def test_names_are_folded_and_checked_together() -> None:
    assert normalise_dns_names(["WWW.Example.COM.", "*.example.com"], "f") == [
        "www.example.com",
        "*.example.com",
    ]
    with pytest.raises(InvalidArgumentError) as caught:
        normalise_dns_names(["ok.example.com", "bad_.example.com", "ok.example.com"], "f")
    assert [v.field for v in caught.value.field_violations] == ["f[1]", "f[2]"]
    with pytest.raises(InvalidArgumentError, match="at most"):
        normalise_dns_names([f"n{i}.example.com" for i in range(101)], "f")
    assert base_domain("*.example.com") == "example.com"


def test_renewal_at_two_thirds_with_bounded_jitter() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=90)
    rng = random.Random(7)
    times = [lifetime_renewal_time(start, end, 0.05, rng) for _ in range(200)]
    assert min(times) >= start + timedelta(days=60) - timedelta(days=4.5)
    assert max(times) <= start + timedelta(days=60) + timedelta(days=4.5)
    assert len(set(times)) > 100
    assert lifetime_renewal_time(start, end, 0.0, rng) == start + timedelta(days=60)


def test_retry_backoff_doubles_and_caps() -> None:
    rng = random.Random(1)
    ceilings = [retry_delay(n, 60, 3600, rng).total_seconds() for n in range(1, 12)]
    assert 30 <= ceilings[0] <= 60
    assert 60 <= ceilings[1] <= 120
    assert 120 <= ceilings[2] <= 240
    assert all(1800 <= c <= 3600 for c in ceilings[7:])


def test_schedule_gauges_follow_the_database() -> None:
    from prometheus_client import CollectorRegistry

    from acmezone_issuer.metrics import IssuerMetrics

    registry = CollectorRegistry()
    metrics = IssuerMetrics(registry)
    t1 = datetime(2027, 1, 1, tzinfo=UTC)
    t2 = datetime(2026, 12, 1, tzinfo=UTC)

    def value(name: str, cert: str) -> float | None:
        return registry.get_sample_value(f"acmezone_issuer_{name}", {"certificate": cert})

    metrics.set_schedules({"certificates/a": (t1, t2), "certificates/b": (None, None)})
    assert value("certificate_expiration_timestamp_seconds", "certificates/a") == t1.timestamp()
    assert value("certificate_renewal_timestamp_seconds", "certificates/a") == t2.timestamp()
    assert value("certificate_expiration_timestamp_seconds", "certificates/b") is None
    # a revoked (no renewal planned), b deleted.
    metrics.set_schedules({"certificates/a": (t1, None)})
    assert value("certificate_expiration_timestamp_seconds", "certificates/a") == t1.timestamp()
    assert value("certificate_renewal_timestamp_seconds", "certificates/a") is None
    metrics.set_schedules({})
    assert value("certificate_expiration_timestamp_seconds", "certificates/a") is None
    metrics.set_state_counts({"issued": 2})
    assert registry.get_sample_value("acmezone_issuer_certificates", {"state": "issued"}) == 2
    assert registry.get_sample_value("acmezone_issuer_certificates", {"state": "failed"}) == 0


def test_a_rate_limited_answer_keeps_the_cas_retry_after() -> None:
    import json

    import requests
    from acme import messages

    from acmezone_issuer.acme_client import _Network, _translate
    from acmezone_issuer.errors import AcmeProblemError

    response = requests.Response()
    response.status_code = 429
    response.headers["Content-Type"] = "application/problem+json"
    response.headers["Retry-After"] = "3600"
    response._content = json.dumps(
        {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many new orders"}
    ).encode()
    with pytest.raises(messages.Error) as raised:
        _Network._check_response(response)
    error = _translate(raised.value)
    assert isinstance(error, AcmeProblemError)
    assert error.problem_type == "urn:ietf:params:acme:error:rateLimited"
    assert "too many new orders" in error.message
    assert error.retry_after is not None
    wait = error.retry_after - datetime.now(UTC)
    assert timedelta(minutes=59) < wait <= timedelta(hours=1)


def test_dns_account_label_matches_the_drafts_example() -> None:
    # draft-ietf-acme-dns-account-label's example account and its label.
    url = "https://example.com/acme/acct/ExampleAccount"
    assert dns_account_label(url) == "_ujmmovf2vn55tgye"
    assert challenge_owner(ChallengeType.DNS_ACCOUNT01, "example.org", url) == (
        "_ujmmovf2vn55tgye._acme-challenge.example.org"
    )
    assert challenge_owner(ChallengeType.DNS01, "example.org", url) == (
        "_acme-challenge.example.org"
    )
    assert dns_account_label(url + "2") != dns_account_label(url)


def test_dns_persist_values_are_composed_and_read_as_the_draft_says() -> None:
    url = "https://ca.example/acct/1"
    assert persist_value("ca.example", url, wildcard=False) == f"ca.example; accounturi={url}"
    wildcard = persist_value("ca.example", url, wildcard=True)
    assert wildcard == f"ca.example; accounturi={url}; policy=wildcard"
    now = datetime(2027, 1, 1, tzinfo=UTC)
    parsed = parse_persist_value(wildcard)
    assert parsed is not None
    assert parsed.authorizes(["ca.example"], url, True, now)
    assert not parsed.authorizes(["other.example"], url, True, now)
    assert not parsed.authorizes(["ca.example"], url + "2", True, now)
    plain = parse_persist_value(f"ca.example;AccountURI={url};Policy=other;persistUntil=1798761600")
    assert plain is not None
    assert plain.persist_until == datetime(2027, 1, 1, tzinfo=UTC)
    assert not plain.authorizes(["ca.example"], url, True, now)  # policy other than wildcard
    assert plain.authorizes(["ca.example"], url, False, now)
    assert not plain.authorizes(["ca.example"], url, False, now + timedelta(seconds=1))
    for bad in (
        "",
        "ca.example",
        "ca.example; accounturi=",
        "ca.example; policy",
        "; accounturi=x",
    ):
        assert parse_persist_value(bad) is None, bad
    assert parse_persist_value("ca.example; accounturi=x; persistUntil=soon") is None


def test_renewal_plan_follows_ari_with_a_floor_for_fresh_certificates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    before, after = now, now + timedelta(days=6)
    rng = random.Random(1)
    common = {"not_before": before, "not_after": after, "now": now, "jitter_fraction": 0.05}
    window = now + timedelta(days=3)
    plan = plan_renewal(
        suggested=window, next_check=now + timedelta(hours=6), fresh=True, rng=rng, **common
    )
    assert (plan.renewal_time, plan.source) == (window, RenewalSource.ARI)
    assert plan.next_check == now + timedelta(hours=6)  # ask again before the window
    # A window already past for a certificate just issued is moved to an hour from now.
    past = plan_renewal(
        suggested=now - timedelta(days=1), next_check=now, fresh=True, rng=rng, **common
    )
    assert past.renewal_time == now + timedelta(hours=1)
    assert past.next_check == now + timedelta(seconds=1)  # never re-asked more often
    # For a certificate issued earlier, a past window means: renew now.
    due = plan_renewal(suggested=now, next_check=now, fresh=False, rng=rng, **common)
    assert due.renewal_time == now
    # Without ARI: two thirds of the lifetime, worked on at that time.
    lifetime = plan_renewal(suggested=None, next_check=None, fresh=True, rng=rng, **common)
    assert lifetime.source == RenewalSource.LIFETIME
    assert lifetime.next_check == lifetime.renewal_time
    assert abs(lifetime.renewal_time - (before + timedelta(days=4))) <= timedelta(hours=8)


def _row(**fields: object) -> CertificateRow:
    values: dict[str, object] = {
        "id": "c",
        "dns_names": ["*.a.test", "b.test"],
        "challenge_type": ChallengeType.AUTO,
        "state": CertificateState.PENDING,
        "stage": Stage.NONE,
        "conditions": [],
        "delegations": [],
        "chain_pem": "",
        "not_after": None,
        "last_failure": None,
    }
    values.update(fields)
    return CertificateRow(**values)


def test_conditions_say_what_the_row_says_and_keep_transition_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waiting = _row(
        state=CertificateState.WAITING_FOR_DELEGATION,
        delegations=[
            {"domain": "a.test", "cname_name": "_acme-challenge.a.test", "ready": False},
            {"domain": "b.test", "cname_name": "_acme-challenge.b.test", "ready": False},
        ],
    )
    # `auto` needs a CNAME only where a wildcard is: b.test can fall back to HTTP-01.
    assert missing_delegations(waiting) == ["_acme-challenge.a.test"]
    first = compute_conditions(waiting, now)
    assert [(c.type, c.status, c.reason) for c in first] == [
        (ConditionType.READY, ConditionStatus.FALSE, "WaitingForCNAME"),
        (ConditionType.ISSUING, ConditionStatus.FALSE, "WaitingForCNAME"),
        (ConditionType.DELEGATION_READY, ConditionStatus.FALSE, "WaitingForCNAME"),
    ]
    later = now + timedelta(minutes=5)
    issuing = _row(
        state=CertificateState.ISSUING,
        stage=Stage.ORDERING,
        conditions=[c.as_json() for c in first],
    )
    second = {c.type: c for c in compute_conditions(issuing, later)}
    assert second[ConditionType.READY].last_transition_time == now.isoformat()  # still False
    assert second[ConditionType.ISSUING].last_transition_time == later.isoformat()  # now True
    assert second[ConditionType.ISSUING].message == "stage ordering"
    assert ConditionType.DELEGATION_READY not in second  # not checked on this row
    assert delegation_methods(ChallengeType.HTTP01) == ()
    revoked = revoked_conditions(issuing, later)
    assert [(c["type"], c["reason"]) for c in revoked] == [
        ("DelegationReady", "WaitingForCNAME"),
        ("Ready", "Revoked"),
    ]
