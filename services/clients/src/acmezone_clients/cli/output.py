"""Rendering for people: tables, one-line progress, certificate and delegation summaries."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from acmezone.dns.v1 import zone_service_pb2
from acmezone.issuer.v1 import account_service_pb2, certificate_service_pb2
from acmezone.registry.v1 import registration_service_pb2, tsig_key_service_pb2

pb = certificate_service_pb2


def table(headers: list[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table."""
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) if rows else "\n".join(lines) + "\n(none)"


def when(stamp: timestamp_pb2.Timestamp) -> str:
    """A timestamp as `2026-01-02 03:04:05Z`."""
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def state(cert: pb.Certificate) -> str:
    """`issued`, `waiting_for_delegation`, ..."""
    return pb.State.Name(cert.state).removeprefix("STATE_").lower()


def stage(cert: pb.Certificate) -> str:
    """`validating`, ... or empty."""
    if cert.stage == pb.STAGE_UNSPECIFIED:
        return ""
    return pb.Stage.Name(cert.stage).removeprefix("STAGE_").lower().replace("_", " ")


def challenge(value: pb.ChallengeType.ValueType) -> str:
    """`dns-01`, `dns-account-01`, ... as the CLI's --challenge spells them."""
    name = pb.ChallengeType.Name(value).removeprefix("CHALLENGE_TYPE_").lower()
    return name.replace("_01", "-01").replace("_", "-")


def progress_line(cert: pb.Certificate) -> str:
    """One line saying where the certificate is."""
    text = f"[{state(cert)}]"
    if cert.stage:
        text += f" {stage(cert)}"
    if cert.state == pb.STATE_WAITING_FOR_DELEGATION:
        missing = sum(1 for d in cert.delegations if not d.ready)
        text += f" {missing} CNAME(s) missing; checking again at {when(cert.next_attempt_time)}"
    if cert.state == pb.STATE_FAILED:
        text += (
            f" attempt {cert.failed_attempts} failed ({cert.last_failure.reason}); "
            f"retry at {when(cert.next_attempt_time)}"
        )
    return text


def cname_table(cert: pb.Certificate) -> str:
    """The CNAMEs to add, as Kalm's UI shows them; for dns-persist-01 also the TXT record that
    may be published instead, and until when the one found holds."""
    rows = []
    for d in cert.delegations:
        now = "ok" if d.ready else d.detail
        if d.ready and d.HasField("persist_until_time"):
            now = f"ok until {when(d.persist_until_time)}"
        rows.append([d.cname_name + ".", "CNAME", d.cname_target + ".", now])
        if d.txt_value:
            rows.append([d.cname_name + ".", "TXT", f'"{d.txt_value}"', "or this, not the CNAME"])
    missing = any(not d.ready for d in cert.delegations)
    title = "Add these records at your DNS provider:" if missing else "Delegations (in place):"
    return f"{title}\n" + table(["NAME", "TYPE", "VALUE", "NOW"], rows)


def certificate(cert: pb.Certificate) -> str:
    """A multi-line summary of a certificate."""
    lines = [
        f"name:        {cert.name}",
        f"dns names:   {', '.join(cert.dns_names)}",
        f"account:     {cert.account}",
        f"challenge:   {challenge(cert.challenge_type)}"
        + (f"  profile: {cert.profile}" if cert.profile else ""),
        f"state:       {state(cert)}" + (f" ({stage(cert)})" if cert.stage else ""),
    ]
    if cert.serial_number:
        lines.append(f"serial:      {cert.serial_number}")
    if cert.HasField("not_after_time"):
        lines.append(f"valid:       {when(cert.not_before_time)} .. {when(cert.not_after_time)}")
    if cert.HasField("renewal_time") and cert.state != pb.STATE_REVOKED:
        lines.append(f"renews:      {when(cert.renewal_time)} ({cert.renewal_time_source})")
    if cert.HasField("next_attempt_time"):
        lines.append(f"next action: {when(cert.next_attempt_time)}")
    if cert.HasField("last_failure"):
        failure = cert.last_failure
        lines.append(f"last error:  {failure.reason} after {cert.failed_attempts} attempt(s)")
        lines.append(f"             {failure.message}")
    for condition in cert.conditions:
        status = pb.ConditionStatus.Name(condition.status).removeprefix("CONDITION_STATUS_")
        lines.append(
            f"condition:   {condition.type}={status.title()} {condition.reason}: "
            f"{condition.message}"
        )
    if cert.delegations:
        lines.append(cname_table(cert))
    return "\n".join(lines)


def delegation(item: pb.Delegation) -> str:
    """A delegation check result."""
    status = "in place" if item.ready else f"missing ({item.detail})"
    return f"{item.cname_name}. CNAME {item.cname_target}.\nstatus: {status}"


def account(item: account_service_pb2.Account) -> str:
    """An account summary."""
    return "\n".join(
        [
            f"name:      {item.name}",
            f"directory: {item.directory_url}",
            f"url:       {item.account_url}",
            f"label:     {item.dns_account_label or '-'} (dns-account-01)",
            f"contact:   {', '.join(item.contact_emails) or '-'}",
            f"key:       {account_service_pb2.KeyType.Name(item.key_type)[9:].lower()}",
        ]
    )


def registration(item: registration_service_pb2.Registration, *, with_password: bool) -> str:
    """A registration summary; the password only right after creation."""
    lines = [
        f"name:       {item.name}",
        f"fulldomain: {item.fulldomain}",
        f"username:   {item.username}",
    ]
    if with_password:
        lines.append(f"password:   {item.password}  (shown once)")
    return "\n".join(lines)


TSIG_ALGORITHMS = {
    # CLI spelling -> (enum, BIND key-file name, DNS name as lego/certbot/cert-manager want it)
    "hmac-sha256": (tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_SHA256, "hmac-sha256"),
    "hmac-sha512": (tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_SHA512, "hmac-sha512"),
    "hmac-sha1": (tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_SHA1, "hmac-sha1"),
    "hmac-md5": (tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_MD5, "hmac-md5.sig-alg.reg.int"),
}
_ALGORITHM_TEXT: dict[int, str] = {int(v[0]): name for name, v in TSIG_ALGORITHMS.items()}


def tsig_algorithm(value: tsig_key_service_pb2.TsigAlgorithm.ValueType | int) -> str:
    """The CLI spelling of a TsigAlgorithm enum value."""
    return _ALGORITHM_TEXT.get(int(value), "unspecified")


def nsupdate_key_file(key: tsig_key_service_pb2.TsigKey) -> str:
    """The key in BIND's key-file syntax, for `nsupdate -k` (and named.conf)."""
    return (
        f'key "{key.key_name}" {{\n'
        f"\talgorithm {tsig_algorithm(key.algorithm)};\n"
        f'\tsecret "{key.secret}";\n'
        "};\n"
    )


def tsig_key_created(key: tsig_key_service_pb2.TsigKey, nameserver: str) -> str:
    """A new key with ready-to-paste settings for nsupdate, lego and certbot-dns-rfc2136."""
    host, _, port = nameserver.rpartition(":")
    host = host.strip("[]") or nameserver
    zone = key.allowed_names[0].split(".", 1)[1] if key.allowed_names else ""
    fulldomain = min(key.allowed_names, key=len) if key.allowed_names else "<fulldomain>."
    algorithm_name = TSIG_ALGORITHMS[tsig_algorithm(key.algorithm)][1]
    return "\n".join(
        [
            f"name:      {key.name}",
            f"key name:  {key.key_name}",
            f"algorithm: {tsig_algorithm(key.algorithm)}",
            f"secret:    {key.secret}  (shown once)",
            f"may change TXT at: {', '.join(key.allowed_names)}",
            "",
            "# nsupdate key file (nsupdate -k FILE):",
            nsupdate_key_file(key).rstrip("\n"),
            "",
            "# lego --dns rfc2136:",
            f"RFC2136_NAMESERVER={nameserver}",
            f"RFC2136_TSIG_KEY={key.key_name}",
            f"RFC2136_TSIG_SECRET={key.secret}",
            f"RFC2136_TSIG_ALGORITHM={algorithm_name}.",
            "",
            "# certbot --dns-rfc2136 credentials file:",
            f"dns_rfc2136_server = {host}",
            f"dns_rfc2136_port = {port or 53}",
            f"dns_rfc2136_name = {key.key_name}",
            f"dns_rfc2136_secret = {key.secret}",
            f"dns_rfc2136_algorithm = {algorithm_name.upper()}",
            "",
            f"# zone: {zone}",
            "",
            "# the customer's _acme-challenge CNAME, by client:",
            f"#   lego, certbot-dns-rfc2136, cert-manager rfc2136: "
            f"_acme-challenge.<domain>. CNAME {fulldomain}",
            f"#   acme.sh --challenge-alias {fulldomain.rstrip('.')}: "
            f"_acme-challenge.<domain>. CNAME _acme-challenge.{fulldomain}",
        ]
    )


def zone_records(records: list[zone_service_pb2.ZoneRecord]) -> str:
    """Static zone records as a table, with the ids `zone-record delete` takes."""
    rows = [("ID", "NAME", "TTL", "TYPE", "DATA")]
    rows += [
        (r.name.rsplit("/", 1)[-1], r.domain_name, str(r.ttl), r.type, r.data) for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) pairs of a BadRequest detail."""
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    result: list[tuple[str, str]] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result += [(v.field, v.description) for v in bad.field_violations]
    return result


def cert_manager(
    registration: registration_service_pb2.Registration,
    domains: list[str],
    *,
    acme_dns_url: str,
    secret_name: str,
    namespace: str,
) -> tuple[dict[str, object], str]:
    """cert-manager's acme-dns solver set-up for a new registration: the Secret (a JSON
    document of credentials keyed by domain, in cert-manager's documented `acmedns.json`
    format), the Issuer solver that reads it, and the CNAME each domain needs. Returns the
    objects (for --json) and the text to paste (two documents, then the CNAMEs as comments)."""
    credentials = {
        domain: {
            "username": registration.username,
            "password": registration.password,
            "fulldomain": registration.fulldomain.rstrip("."),
            "subdomain": registration.subdomain,
            "allowfrom": list(registration.allowed_cidrs),
        }
        for domain in domains
    }
    secret: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": namespace},
        "type": "Opaque",
        "stringData": {"acmedns.json": json.dumps(credentials, indent=2, sort_keys=True)},
    }
    issuer: dict[str, object] = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Issuer",
        "metadata": {"name": "acmezone", "namespace": namespace},
        "spec": {
            "acme": {
                "server": "https://acme-v02.api.letsencrypt.org/directory",
                "privateKeySecretRef": {"name": "acmezone-acme-account"},
                "solvers": [
                    {
                        "selector": {"dnsZones": domains},
                        "dns01": {
                            "acmeDNS": {
                                "host": acme_dns_url,
                                "accountSecretRef": {"name": secret_name, "key": "acmedns.json"},
                            }
                        },
                    }
                ],
            }
        },
    }
    cnames = [
        f"_acme-challenge.{domain}. CNAME {registration.fulldomain.rstrip('.')}."
        for domain in domains
    ]
    # JSON documents are YAML documents too: kubectl applies them as they are, and the CLI
    # needs no YAML library.
    text = (
        "# Secret with the acme-dns credentials (the password is shown once; kubectl apply -f -):\n"
        + json.dumps(secret, indent=2)
        + "\n---\n# Issuer (set server and privateKeySecretRef to your CA's):\n"
        + json.dumps(issuer, indent=2)
        + "\n# Add at your DNS provider (cert-manager does not create it):\n"
        + "".join(f"#   {line}\n" for line in cnames)
    )
    return {"secret": secret, "issuer": issuer, "cnames": cnames}, text.rstrip("\n")
