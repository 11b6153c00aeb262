"""Settings from ACMEZONE_DNS_* variables: defaults, lists as comma text or JSON, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from acmezone_common.addresses import HostPort
from acmezone_dns.settings import DnsSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))  # no stray .env
    settings = DnsSettings()
    assert settings.dns_addresses == [HostPort("127.0.0.1", 5353)]
    assert settings.grpc_address == HostPort("127.0.0.1", 50052)
    assert settings.metrics_address == HostPort("127.0.0.1", 9102)
    assert settings.registry_target == "127.0.0.1:50051"
    assert settings.zone == "acme.example.test."
    assert settings.soa_mname == "ns1.acme.example.test."
    assert settings.soa_rname == "hostmaster.acme.example.test."
    assert (settings.soa_minimum, settings.txt_ttl, settings.edns_udp_size) == (60, 1, 1232)


def test_environment_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("ACMEZONE_DNS_DNS_ADDRESSES", "127.0.0.1:53, [::1]:53")
    monkeypatch.setenv("ACMEZONE_DNS_NS_NAMES", "NS1.Example.TEST,ns2.example.test.")
    monkeypatch.setenv("ACMEZONE_DNS_STATIC_RECORDS", '["@ CAA 0 issue \\"ca.test\\""]')
    monkeypatch.setenv("ACMEZONE_DNS_ZONE", "Example.Test")
    settings = DnsSettings()
    assert settings.dns_addresses == [HostPort("127.0.0.1", 53), HostPort("::1", 53)]
    assert settings.ns_names == ["ns1.example.test.", "ns2.example.test."]
    assert settings.static_records == ['@ CAA 0 issue "ca.test"']
    assert settings.zone == "example.test."


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dns_addresses", "localhost"),
        ("dns_addresses", "::1:53"),
        ("ns_addresses", "not-an-ip"),
        ("edns_udp_size", "100"),
        ("zone_files", "/does/not/exist.zone"),
        ("zone", "."),
    ],
)
def test_bad_values_fail_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, field: str, value: str
) -> None:
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv(f"ACMEZONE_DNS_{field.upper()}", value)
    with pytest.raises(ValidationError):
        DnsSettings()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"notify_targets": ["ns.example.test:53"]}, "IP address"),
        ({"notify_targets": ["127.0.0.1:0"]}, "port"),
        (
            {"transfer_keys": ["k:hmac-sha256:c2VjcmV0"], "transfer_allow": ["other"]},
            "no transfer key",
        ),
        ({"transfer_keys": ["k:hmac-sha999:c2VjcmV0"], "transfer_allow": ["k"]}, "algorithm"),
        ({"transfer_keys": ["k:hmac-sha256:not base64!"], "transfer_allow": ["k"]}, "base64"),
    ],
)
def test_bad_transfer_settings_are_refused_without_showing_secrets(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        DnsSettings(**overrides)  # type: ignore[arg-type]
    assert "c2VjcmV0" not in str(refused.value)
