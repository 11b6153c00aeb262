"""The dns service's settings, from `ACMEZONE_DNS_*` environment variables or a `.env` file.

Lists (listen addresses, name servers, static records, zone files) may be given as JSON arrays or
as comma-separated text, e.g. `ACMEZONE_DNS_DNS_ADDRESSES=127.0.0.1:5353,[::1]:5353`; static
records hold spaces and quotes, so give those as a JSON array.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from acmezone_common.addresses import HostPort
from acmezone_common.settings import Address, RegistryClientSettings, ServiceSettings


def _split_list(value: object) -> object:
    """Accept `a,b,c` as well as a JSON array or a Python list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _normalise_name(value: str) -> str:
    """Lower-case, fully qualified (trailing dot) domain name."""
    name = value.strip().lower()
    if not name or name == ".":
        raise ValueError("a domain name is required")
    return name if name.endswith(".") else name + "."


AddressList = Annotated[list[Address], NoDecode, BeforeValidator(_split_list)]
TextList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)]


class DnsSettings(ServiceSettings, RegistryClientSettings):
    """Everything the dns service can be told; defaults run it locally next to the registry."""

    # hide_input_in_errors: a bad setting must not print the transfer keys beside it.
    model_config = SettingsConfigDict(
        env_prefix="ACMEZONE_DNS_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    grpc_address: Address = Field(
        default=HostPort("127.0.0.1", 50052), description="Where the ZoneService gRPC API listens."
    )
    metrics_address: Address = Field(
        default=HostPort("127.0.0.1", 9102), description="Where Prometheus scrapes /metrics."
    )
    dns_addresses: AddressList = Field(
        default=[HostPort("127.0.0.1", 5353)],
        min_length=1,
        description="Where DNS listens, UDP and TCP on each: `127.0.0.1:53`, `[::]:53`, ...",
    )
    registry_target: str = Field(
        default="127.0.0.1:50051",
        description="The registry's gRPC address (a grpc target) to stream the record feed from "
        "and forward RFC 2136 UPDATE messages to.",
    )
    registry_token: SecretStr | None = Field(
        default=None,
        description="The registry's feed (or operator) token, presented on the feed, the "
        "served-revision reports and UPDATE forwarding.",
    )
    replica_name: str | None = Field(
        default=None,
        max_length=253,
        description="The name this replica reports its served revision under (readiness: the "
        "registry waits for every replica). Unset: the host name and the first DNS address.",
    )
    zone: str = Field(
        default="acme.example.test", description="The challenge zone the registry allocates in."
    )
    ns_names: TextList = Field(
        default=["ns1.acme.example.test"],
        min_length=1,
        description="The zone's name servers (NS records at the apex).",
    )
    ns_addresses: TextList = Field(
        default=["127.0.0.1"],
        description="IPv4/IPv6 addresses served as A/AAAA for every NS name inside the zone.",
    )
    soa_mname: str | None = Field(
        default=None, description="SOA primary name server; the first NS name when unset."
    )
    soa_rname: str | None = Field(
        default=None,
        description="SOA mailbox as a domain name (`hostmaster.zone.`); `hostmaster.<zone>` "
        "when unset.",
    )
    soa_serial: int = Field(
        default=1,
        ge=0,
        lt=2**32,
        description="SOA serial. Fixed unless zone transfers are allowed (`transfer_allow`), "
        "when the challenge zone's follows the feed revision instead.",
    )
    soa_refresh: int = Field(default=3600, ge=0, description="SOA refresh, seconds.")
    soa_retry: int = Field(default=600, ge=0, description="SOA retry, seconds.")
    soa_expire: int = Field(default=86400, ge=0, description="SOA expire, seconds.")
    soa_minimum: int = Field(
        default=60,
        ge=0,
        description="SOA minimum: the negative-caching TTL of NXDOMAIN/NODATA answers, seconds. "
        "Short, so a fresh challenge is never hidden by a cached NXDOMAIN.",
    )
    soa_ttl: int = Field(default=60, ge=0, description="TTL of the SOA record, seconds.")
    ns_ttl: int = Field(default=3600, ge=0, description="TTL of NS and name server A/AAAA.")
    txt_ttl: int = Field(default=1, ge=0, description="TTL of the TXT records from the feed.")
    static_ttl: int = Field(
        default=300, ge=0, description="Default TTL of static records that give none."
    )
    static_records: TextList = Field(
        default=[],
        description="Extra records of the challenge zone in zone-file syntax, relative to it, "
        'e.g. `@ CAA 0 issue "letsencrypt.org"` (JSON array).',
    )
    zone_files: TextList = Field(
        default=[],
        description="RFC 1035 zone files of extra static zones; each needs $ORIGIN, SOA and NS.",
    )
    zone_reload_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="How often zone files are checked for changes (mtime, size, then SHA-256) "
        "and reloaded; 0 reloads only on SIGHUP or through the API.",
    )
    zone_edit_token: SecretStr | None = Field(
        default=None,
        description="When set, ZoneService.CreateZoneRecord/DeleteZoneRecord may change the "
        "zone files, given `authorization: Bearer <token>`; unset, zone files change only by "
        "hand.",
    )
    transfer_keys: SecretList = Field(
        default=[],
        description="TSIG keys secondaries sign zone transfer requests with, each "
        "`name:algorithm:base64-secret` (algorithm hmac-sha256, hmac-sha512, ...; as BIND's "
        "tsig-keygen makes them). Secrets: give them from a Secret, never log them.",
    )
    transfer_allow: TextList = Field(
        default=[],
        description="Who may transfer the challenge zone (AXFR/IXFR over TCP): `key@network`, "
        "e.g. `secondary1@192.0.2.0/24`, or `key` for any address. Empty: no transfers, and the "
        "SOA serial stays `soa_serial`; otherwise it follows the feed revision.",
    )
    notify_targets: AddressList = Field(
        default=[],
        description="Secondaries sent a NOTIFY (RFC 1996) on every change of the challenge "
        "zone, `host:port` each.",
    )
    notify_delay_seconds: float = Field(
        default=0.05,
        ge=0,
        le=60,
        description="Changes within this window are announced with one NOTIFY.",
    )
    ixfr_journal_revisions: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Revisions kept in memory for IXFR; a secondary further behind gets the "
        "whole zone.",
    )
    transfer_max_concurrent: int = Field(
        default=8, ge=1, le=1000, description="Zone transfers served at once; more are REFUSED."
    )
    edns_udp_size: int = Field(
        default=1232,
        ge=512,
        le=4096,
        description="The EDNS UDP payload size advertised and honoured, bytes.",
    )
    udp_batch_size: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="UDP datagrams read (recvmmsg) and answered (sendmmsg) per system call on "
        "Linux; 1 reads one at a time with recvfrom, as on other systems.",
    )
    udp_native: bool = Field(
        default=True,
        description="Answer plain UDP queries in the C accelerator when it was built (the "
        "startup log names the UDP path in use); false keeps the whole UDP path in Python.",
    )
    tcp_idle_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Close TCP connections idle this long (RFC 7766)."
    )
    tcp_max_connections: int = Field(
        default=256,
        ge=1,
        description="TCP connections open at once; a new one past it evicts the connection "
        "idle the longest (RFC 7766 section 6.2.3), or is closed when none is idle.",
    )
    tcp_max_connections_per_source: int = Field(
        default=32,
        ge=1,
        description="TCP connections open at once from one IPv4 address or IPv6 /64; a new one "
        "past it evicts that source's oldest idle connection, or is closed when none is idle.",
    )
    cookie_secret: SecretStr | None = Field(
        default=None,
        description="The DNS COOKIE server secret (RFC 9018), 32 hex digits; give every "
        "replica behind one address the same one. Unset: COOKIE_SECRET_FILE.",
    )
    cookie_secret_file: Path | None = Field(
        default=None,
        description="A file holding the server secret in hex, generated (0600) when missing. "
        "Unset too: a random secret for this process only.",
    )
    dnssec_key_dir: Path | None = Field(
        default=None,
        description="DNSSEC: the directory of signing key files (`acmezone-dns dnssec keygen`); "
        "set, every zone with keys there is signed online. Unset: no signing.",
    )
    dnssec_sealing_key: SecretStr | None = Field(
        default=None,
        description="DNSSEC: the 32-byte key (base64url) the key files' private keys are sealed "
        "under (AES-GCM); unset, key files hold them unsealed (a mounted Secret, 0600).",
    )
    dnssec_signature_validity_seconds: int = Field(
        default=14 * 86400,
        ge=3 * 3600,
        description="DNSSEC: how long a signature is valid (it starts an hour in the past).",
    )
    dnssec_refresh_seconds: int = Field(
        default=7 * 86400,
        ge=3600,
        description="DNSSEC: a signature this close to expiry is made again; longer than any "
        "TTL served, shorter than the validity.",
    )
    dnssec_dnskey_ttl: int = Field(
        default=3600, ge=0, description="DNSSEC: TTL of the DNSKEY RRset."
    )
    dnssec_denial_signatures_per_second: float = Field(
        default=2000.0,
        gt=0,
        description="DNSSEC: new negative-answer proofs signed per second at most (a random "
        "subdomain flood); past it UDP gets TC and TCP SERVFAIL.",
    )
    dnssec_denial_cache: int = Field(
        default=100_000, ge=1, description="DNSSEC: signed negative-answer proofs kept."
    )
    update_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Deadline of forwarding one RFC 2136 UPDATE to the registry; past it the "
        "client gets SERVFAIL.",
    )
    update_revision_wait_seconds: float = Field(
        default=1.0,
        ge=0,
        description="After an UPDATE is committed, wait at most this long for this replica to "
        "serve the change before answering.",
    )
    feed_backoff_initial_seconds: float = Field(
        default=0.1, gt=0, description="First delay before reconnecting to the feed."
    )
    feed_backoff_max_seconds: float = Field(
        default=5.0, gt=0, description="Longest delay between feed reconnection attempts."
    )

    @field_validator("zone", "soa_mname", "soa_rname")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        return None if value is None else _normalise_name(value)

    @field_validator("ns_names")
    @classmethod
    def _fqdns(cls, value: list[str]) -> list[str]:
        return [_normalise_name(v) for v in value]

    @field_validator("ns_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_address(v)) for v in value]

    @field_validator("cookie_secret")
    @classmethod
    def _cookie_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            try:
                if len(bytes.fromhex(value.get_secret_value())) != 16:
                    raise ValueError
            except ValueError:
                raise ValueError("cookie_secret must be 32 hex digits (16 bytes)") from None
        return value

    @field_validator("notify_targets")
    @classmethod
    def _notify_addresses(cls, value: list[HostPort]) -> list[HostPort]:
        for target in value:
            try:
                ipaddress.ip_address(target.host)
            except ValueError as exc:
                raise ValueError(f"notify target {target}: give an IP address") from exc
            if not target.port:
                raise ValueError(f"notify target {target}: give the port")
        return value

    @field_validator("zone_files")
    @classmethod
    def _files(cls, value: list[str]) -> list[str]:
        for path in value:
            if not Path(path).is_file():
                raise ValueError(f"zone file {path!r} does not exist")
        return value

    @model_validator(mode="after")
    def _transfer_policy(self) -> DnsSettings:
        from acmezone_dns.transfer import TransferPolicy  # parsing lives with its use

        TransferPolicy.from_settings(
            [k.get_secret_value() for k in self.transfer_keys], self.transfer_allow
        )
        return self

    @model_validator(mode="after")
    def _dnssec(self) -> DnsSettings:
        if self.dnssec_refresh_seconds >= self.dnssec_signature_validity_seconds:
            raise ValueError(
                "dnssec_refresh_seconds must be shorter than dnssec_signature_validity_seconds"
            )
        return self

    @model_validator(mode="after")
    def _defaults_from_zone(self) -> DnsSettings:
        if self.soa_mname is None:
            self.soa_mname = self.ns_names[0]
        if self.soa_rname is None:
            self.soa_rname = "hostmaster." + self.zone
        if self.feed_backoff_max_seconds < self.feed_backoff_initial_seconds:
            raise ValueError("feed_backoff_max_seconds must be >= feed_backoff_initial_seconds")
        return self
