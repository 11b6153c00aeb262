"""The `acmezone` commands: thin gRPC clients of the issuer, registry and dns services.

Every command prints for people by default and, with `--json`, one JSON document (protobuf's
canonical JSON mapping) for scripts. `cert request` and `cert watch` follow a certificate live,
printing each stage as it is reached and, while the issuer waits for delegation, the table of
CNAMEs to add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from acmezone.dns.v1 import zone_service_pb2, zone_service_pb2_grpc
from acmezone.issuer.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    certificate_service_pb2,
    certificate_service_pb2_grpc,
)
from acmezone.registry.v1 import (
    registration_service_pb2,
    registration_service_pb2_grpc,
    tsig_key_service_pb2,
    tsig_key_service_pb2_grpc,
)
from acmezone_clients.agent.cli import add_agent_arguments, run_agent
from acmezone_clients.agent.settings import AgentSettings
from acmezone_clients.cli import delivery, output
from acmezone_clients.cli.settings import CliSettings
from acmezone_common.logs import configure_logging
from acmezone_common.names import resource_name
from acmezone_common.transport import client_tls, open_channel

pb = certificate_service_pb2
apb = account_service_pb2

_KEY_TYPES = {
    "ecdsa-p256": apb.KEY_TYPE_ECDSA_P256,
    "ecdsa-p384": apb.KEY_TYPE_ECDSA_P384,
    "rsa-2048": apb.KEY_TYPE_RSA_2048,
    "rsa-4096": apb.KEY_TYPE_RSA_4096,
}
_REASONS = {
    "unspecified": pb.REVOCATION_REASON_NONE_GIVEN,
    "key-compromise": pb.REVOCATION_REASON_KEY_COMPROMISE,
    "affiliation-changed": pb.REVOCATION_REASON_AFFILIATION_CHANGED,
    "superseded": pb.REVOCATION_REASON_SUPERSEDED,
    "cessation-of-operation": pb.REVOCATION_REASON_CESSATION_OF_OPERATION,
}
_TERMINAL = (pb.STATE_ISSUED, pb.STATE_FAILED, pb.STATE_REVOKED)


class Cli:
    """Shared state of one invocation: addresses, credentials, output mode."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.json: bool = args.json
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, target: str) -> grpc.aio.Channel:
        if target not in self._channels:
            args = self.args
            tls = client_tls(False, args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
            self._channels[target] = open_channel(target, tls=tls)
        return self._channels[target]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    @property
    def issuer_metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.args.token
        return (("authorization", f"Bearer {token}"),) if token else ()

    @property
    def registry_metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.args.registry_token
        return (("authorization", f"Bearer {token}"),) if token else ()

    def accounts(self) -> account_service_pb2_grpc.AccountServiceAsyncStub:
        return account_service_pb2_grpc.AccountServiceStub(self.channel(self.args.issuer))

    def certificates(self) -> certificate_service_pb2_grpc.CertificateServiceAsyncStub:
        return certificate_service_pb2_grpc.CertificateServiceStub(self.channel(self.args.issuer))

    def registrations(self) -> registration_service_pb2_grpc.RegistrationServiceAsyncStub:
        return registration_service_pb2_grpc.RegistrationServiceStub(
            self.channel(self.args.registry)
        )

    @property
    def zone_metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.args.zone_token
        return (("authorization", f"Bearer {token}"),) if token else ()

    def zones(self) -> zone_service_pb2_grpc.ZoneServiceAsyncStub:
        return zone_service_pb2_grpc.ZoneServiceStub(self.channel(self.args.dns))

    def tsig_keys(self) -> tsig_key_service_pb2_grpc.TsigKeyServiceAsyncStub:
        return tsig_key_service_pb2_grpc.TsigKeyServiceStub(self.channel(self.args.registry))

    def emit(self, message: Message | list[Message] | Mapping[str, object], text: str) -> None:
        """Print `text` for people, or the message(s) as JSON."""
        if self.json:
            data: object
            if isinstance(message, Message):
                data = json_format.MessageToDict(message)
            elif isinstance(message, list):
                data = [json_format.MessageToDict(m) for m in message]
            else:
                data = message
            print(json.dumps(data, indent=2, sort_keys=True), file=self.out)
        else:
            print(text, file=self.out)


# `--challenge` values: the ACME type names, and `auto`.
_CHALLENGE_TYPES = {
    "dns-01": pb.CHALLENGE_TYPE_DNS_01,
    "dns-account-01": pb.CHALLENGE_TYPE_DNS_ACCOUNT_01,
    "dns-persist-01": pb.CHALLENGE_TYPE_DNS_PERSIST_01,
    "http-01": pb.CHALLENGE_TYPE_HTTP_01,
    "auto": pb.CHALLENGE_TYPE_AUTO,
}


def _cert_name(value: str) -> str:
    return resource_name("certificates", value)


def _account_name(value: str) -> str:
    return resource_name("accounts", value)


def _registration_name(value: str) -> str:
    return resource_name("registrations", value)


# -- status ----------------------------------------------------------------------------------


def _enum_word(name: str, prefix: str) -> str:
    """`ZONE_SOURCE_FEED` -> `feed`; the unset value (`*_UNSPECIFIED`) -> ""."""
    word = name.removeprefix(prefix).lower()
    return "" if word == "unspecified" else word


async def cmd_status(cli: Cli) -> int:
    rows = []
    healthy = True
    for service, target in (
        ("registry", cli.args.registry),
        ("dns", cli.args.dns),
        ("issuer", cli.args.issuer),
    ):
        try:
            reply = await health_pb2_grpc.HealthStub(cli.channel(target)).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
        healthy = healthy and status == "SERVING"
        rows.append({"service": service, "address": target, "status": status})
    zones: list[zone_service_pb2.Zone] = []
    try:
        reply = await zone_service_pb2_grpc.ZoneServiceStub(cli.channel(cli.args.dns)).ListZones(
            zone_service_pb2.ListZonesRequest(), timeout=2
        )
        zones = list(reply.zones)
    except grpc.aio.AioRpcError:
        pass
    text = output.table(["SERVICE", "ADDRESS", "STATUS"], [list(r.values()) for r in rows])
    if zones:
        text += "\n\n" + output.table(
            ["ZONE", "SOURCE", "RECORDS", "FEED"],
            [
                [
                    z.name,
                    _enum_word(zone_service_pb2.ZoneSource.Name(z.source), "ZONE_SOURCE_"),
                    z.record_count,
                    _enum_word(zone_service_pb2.FeedState.Name(z.feed_state), "FEED_STATE_"),
                ]
                for z in zones
            ],
        )
    cli.emit({"services": rows, "zones": [json_format.MessageToDict(z) for z in zones]}, text)
    return 0 if healthy else 1


# -- accounts --------------------------------------------------------------------------------


async def cmd_account_create(cli: Cli) -> int:
    a = cli.args
    account = apb.Account(
        directory_url=a.directory or "",
        contact_emails=a.email or [],
        terms_of_service_agreed=a.agree_tos,
        key_type=_KEY_TYPES[a.key_type],
    )
    if a.eab_kid:
        account.external_account_binding.key_id = a.eab_kid
        account.external_account_binding.hmac_key = a.eab_hmac or ""
    created = await cli.accounts().CreateAccount(
        apb.CreateAccountRequest(account=account, account_id=a.id or ""),
        metadata=cli.issuer_metadata,
    )
    cli.emit(created, output.account(created))
    return 0


async def cmd_account_list(cli: Cli) -> int:
    accounts: list[apb.Account] = []
    token = ""
    while True:
        page = await cli.accounts().ListAccounts(
            apb.ListAccountsRequest(page_size=100, page_token=token), metadata=cli.issuer_metadata
        )
        accounts += page.accounts
        token = page.next_page_token
        if not token:
            break
    rows = [
        [a.name, a.directory_url, ",".join(a.contact_emails), apb.KeyType.Name(a.key_type)[9:]]
        for a in accounts
    ]
    cli.emit(list(accounts), output.table(["NAME", "DIRECTORY", "CONTACT", "KEY"], rows))
    return 0


async def cmd_account_show(cli: Cli) -> int:
    account = await cli.accounts().GetAccount(
        apb.GetAccountRequest(name=_account_name(cli.args.name)), metadata=cli.issuer_metadata
    )
    cli.emit(account, output.account(account))
    return 0


async def cmd_account_delete(cli: Cli) -> int:
    name = _account_name(cli.args.name)
    await cli.accounts().DeleteAccount(
        apb.DeleteAccountRequest(name=name), metadata=cli.issuer_metadata
    )
    cli.emit({"deleted": name}, f"deleted {name}")
    return 0


# -- certificates ----------------------------------------------------------------------------


async def cmd_cert_request(cli: Cli) -> int:
    a = cli.args
    certificate = pb.Certificate(
        dns_names=a.names,
        account=_account_name(a.account),
        key_type=_KEY_TYPES[a.key_type],
        profile=a.profile or "",
        challenge_type=_CHALLENGE_TYPES["http-01" if a.http01 else a.challenge],
    )
    created = await cli.certificates().CreateCertificate(
        pb.CreateCertificateRequest(certificate=certificate, certificate_id=a.id or ""),
        metadata=cli.issuer_metadata,
    )
    if a.no_follow:
        cli.emit(created, output.certificate(created))
        return 0
    if not cli.json:
        print(f"requested {created.name} for {', '.join(created.dns_names)}", file=cli.out)
    return await follow(cli, created.name, a.timeout, add_cnames=a.add_cnames)


async def add_cname(cli: Cli, owner: str, target: str) -> None:
    """Add a missing `_acme-challenge` CNAME to the static zone served by dns that holds it
    (`cert request --add-cnames`); say so when no such zone is served here."""
    zones = await cli.zones().ListZones(zone_service_pb2.ListZonesRequest(page_size=1000))
    fqdn = owner.rstrip(".").lower() + "."
    hosted = [
        z.apex
        for z in zones.zones
        if z.source == zone_service_pb2.ZONE_SOURCE_STATIC
        and (fqdn == z.apex or fqdn.endswith("." + z.apex))
    ]
    if not hosted:
        print(f"{fqdn} is in no zone served here: add the CNAME at its DNS provider", file=cli.out)
        return
    apex = max(hosted, key=len)
    try:
        await cli.zones().CreateZoneRecord(
            zone_service_pb2.CreateZoneRecordRequest(
                parent=_zone_parent(apex),
                zone_record=zone_service_pb2.ZoneRecord(
                    domain_name=fqdn, type="CNAME", data=target.rstrip(".") + "."
                ),
            ),
            metadata=cli.zone_metadata,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            print(f"adding {fqdn} CNAME to {apex} failed: {exc.details()}", file=cli.out)
        return
    print(f"added {fqdn} CNAME {target.rstrip('.')}. to the zone {apex}", file=cli.out)


async def follow(
    cli: Cli, name: str, seconds: float, *, until_change: int = 0, add_cnames: bool = False
) -> int:
    """Print each change of a certificate until it settles; exit 0 when issued. With
    `add_cnames`, missing CNAMEs in zones served here are added through the dns service."""
    last_line = ""
    last_cnames: list[tuple[str, str, bool]] = []
    final: pb.Certificate | None = None
    tried: set[str] = set()

    async def run() -> None:
        nonlocal last_line, last_cnames, final
        stream = cli.certificates().WatchCertificate(
            pb.WatchCertificateRequest(name=name), metadata=cli.issuer_metadata
        )
        async for message in stream:
            cert = message.certificate
            final = cert
            if not cli.json:
                line = output.progress_line(cert)
                if line != last_line:
                    print(line, file=cli.out, flush=True)
                    last_line = line
                cnames = [(d.cname_name, d.cname_target, d.ready) for d in cert.delegations]
                if cert.state == pb.STATE_WAITING_FOR_DELEGATION and cnames != last_cnames:
                    print(output.cname_table(cert), file=cli.out, flush=True)
                last_cnames = cnames
            if add_cnames and cert.state == pb.STATE_WAITING_FOR_DELEGATION:
                for d in cert.delegations:
                    if not d.ready and d.cname_name not in tried:
                        tried.add(d.cname_name)
                        await add_cname(cli, d.cname_name, d.cname_target)
            if cert.state in _TERMINAL and cert.revision > until_change and not cert.stage:
                stream.cancel()
                return

    try:
        await asyncio.wait_for(run(), seconds)
    except TimeoutError:
        if not cli.json:
            print(
                f"still not settled after {seconds:.0f}s; follow with `acmezone cert watch`",
                file=cli.out,
            )
    if final is None:
        return 1
    if cli.json:
        cli.emit(final, "")
    elif final.state == pb.STATE_ISSUED:
        print(output.certificate(final), file=cli.out)
    elif final.state == pb.STATE_FAILED:
        print(f"failed: {final.last_failure.message}", file=cli.out)
    return 0 if final.state == pb.STATE_ISSUED else 1


async def cmd_cert_watch(cli: Cli) -> int:
    return await follow(cli, _cert_name(cli.args.name), cli.args.timeout)


async def cmd_cert_list(cli: Cli) -> int:
    certs: list[pb.Certificate] = []
    token = ""
    while True:
        page = await cli.certificates().ListCertificates(
            pb.ListCertificatesRequest(page_size=100, page_token=token),
            metadata=cli.issuer_metadata,
        )
        certs += page.certificates
        token = page.next_page_token
        if not token:
            break
    rows = [
        [
            c.name,
            output.state(c),
            ",".join(c.dns_names),
            output.when(c.not_after_time) if c.HasField("not_after_time") else "-",
            output.when(c.renewal_time) if c.HasField("renewal_time") else "-",
        ]
        for c in certs
    ]
    cli.emit(list(certs), output.table(["NAME", "STATE", "NAMES", "EXPIRES", "RENEWS"], rows))
    return 0


async def cmd_cert_show(cli: Cli) -> int:
    cert = await cli.certificates().GetCertificate(
        pb.GetCertificateRequest(name=_cert_name(cli.args.name)), metadata=cli.issuer_metadata
    )
    text = output.certificate(cert)
    if not cli.json:
        text += await delivery.targets_table(cli, cert.name)
    cli.emit(cert, text)
    return 0


async def cmd_cert_renew(cli: Cli) -> int:
    name = _cert_name(cli.args.name)
    cert = await cli.certificates().RenewCertificate(
        pb.RenewCertificateRequest(name=name), metadata=cli.issuer_metadata
    )
    if not cli.args.follow:
        cli.emit(cert, f"renewal of {name} requested")
        return 0
    return await follow(cli, name, cli.args.timeout, until_change=cert.revision)


async def cmd_cert_revoke(cli: Cli) -> int:
    cert = await cli.certificates().RevokeCertificate(
        pb.RevokeCertificateRequest(
            name=_cert_name(cli.args.name), reason=_REASONS[cli.args.reason]
        ),
        metadata=cli.issuer_metadata,
    )
    cli.emit(cert, output.certificate(cert))
    return 0


async def cmd_cert_delete(cli: Cli) -> int:
    name = _cert_name(cli.args.name)
    await cli.certificates().DeleteCertificate(
        pb.DeleteCertificateRequest(name=name), metadata=cli.issuer_metadata
    )
    cli.emit({"deleted": name}, f"deleted {name}")
    return 0


async def cmd_cert_export(cli: Cli) -> int:
    bundle = await cli.certificates().ExportCertificate(
        pb.ExportCertificateRequest(name=_cert_name(cli.args.name)), metadata=cli.issuer_metadata
    )
    out_dir: Path | None = cli.args.out_dir
    if out_dir is None:
        cli.emit(bundle, bundle.certificate_chain_pem + bundle.private_key_pem)
        return 0
    chain, key = await asyncio.to_thread(write_bundle, out_dir, bundle)
    cli.emit({"chain": str(chain), "key": str(key)}, f"wrote {chain} and {key} (mode 0600)")
    return 0


def write_bundle(out_dir: Path, bundle: pb.CertificateBundle) -> tuple[Path, Path]:
    """Write fullchain.pem and privkey.pem (0600) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chain = out_dir / "fullchain.pem"
    key = out_dir / "privkey.pem"
    chain.write_text(bundle.certificate_chain_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(bundle.private_key_pem)
    return chain, key


async def cmd_delegation_check(cli: Cli) -> int:
    a = cli.args
    delegation = await cli.certificates().CheckDelegation(
        pb.CheckDelegationRequest(
            domain=a.domain,
            challenge_type=_CHALLENGE_TYPES[a.challenge],
            account=_account_name(a.account) if a.account else "",
        ),
        metadata=cli.issuer_metadata,
    )
    cli.emit(delegation, output.delegation(delegation))
    return 0 if delegation.ready else 2


# -- registrations ---------------------------------------------------------------------------


async def cmd_registration_create(cli: Cli) -> int:
    a = cli.args
    created = await cli.registrations().CreateRegistration(
        registration_service_pb2.CreateRegistrationRequest(
            registration=registration_service_pb2.Registration(
                allowed_cidrs=a.allow or [], description=a.description or ""
            ),
            registration_id=a.id or "",
        ),
        metadata=cli.registry_metadata,
    )
    if a.cert_manager:
        if not a.for_domain:
            print("error: --cert-manager needs --for-domain", file=sys.stderr)
            return 2
        objects, text = output.cert_manager(
            created,
            a.for_domain,
            acme_dns_url=a.acme_dns_url,
            secret_name=a.secret_name,
            namespace=a.namespace,
        )
        cli.emit(objects, text)
        return 0
    cli.emit(created, output.registration(created, with_password=True))
    if a.for_domain:
        print(
            "\n".join(
                f"add: _acme-challenge.{d}. CNAME {created.fulldomain.rstrip('.')}."
                for d in a.for_domain
            ),
            file=cli.out,
        )
    return 0


async def cmd_registration_list(cli: Cli) -> int:
    found: list[registration_service_pb2.Registration] = []
    token = ""
    while True:
        page = await cli.registrations().ListRegistrations(
            registration_service_pb2.ListRegistrationsRequest(page_size=100, page_token=token),
            metadata=cli.registry_metadata,
        )
        found += page.registrations
        token = page.next_page_token
        if not token:
            break
    rows = [
        [r.name, r.fulldomain, ",".join(r.allowed_cidrs) or "any", r.description] for r in found
    ]
    cli.emit(list(found), output.table(["NAME", "FULLDOMAIN", "ALLOWED", "DESCRIPTION"], rows))
    return 0


async def cmd_registration_show(cli: Cli) -> int:
    found = await cli.registrations().GetRegistration(
        registration_service_pb2.GetRegistrationRequest(name=_registration_name(cli.args.name)),
        metadata=cli.registry_metadata,
    )
    cli.emit(found, output.registration(found, with_password=False))
    return 0


async def cmd_registration_delete(cli: Cli) -> int:
    name = _registration_name(cli.args.name)
    await cli.registrations().DeleteRegistration(
        registration_service_pb2.DeleteRegistrationRequest(name=name),
        metadata=cli.registry_metadata,
    )
    cli.emit({"deleted": name}, f"deleted {name}")
    return 0


# -- TSIG keys (RFC 2136) --------------------------------------------------------------------


def _tsig_key_name(registration: str, key_id: str) -> str:
    if key_id.startswith("registrations/"):
        return key_id
    return f"{_registration_name(registration)}/tsigKeys/{key_id}"


def _zone_parent(zone: str) -> str:
    return zone if zone.startswith("zones/") else "zones/" + zone.rstrip(".").lower()


async def cmd_zone_record_list(cli: Cli) -> int:
    records: list[zone_service_pb2.ZoneRecord] = []
    token = ""
    while True:
        page = await cli.zones().ListZoneRecords(
            zone_service_pb2.ListZoneRecordsRequest(
                parent=_zone_parent(cli.args.zone), page_size=1000, page_token=token
            )
        )
        records += page.zone_records
        token = page.next_page_token
        if not token:
            break
    cli.emit(list(records), output.zone_records(records))
    return 0


async def cmd_zone_record_add(cli: Cli) -> int:
    a = cli.args
    created = await cli.zones().CreateZoneRecord(
        zone_service_pb2.CreateZoneRecordRequest(
            parent=_zone_parent(a.zone),
            zone_record=zone_service_pb2.ZoneRecord(
                domain_name=a.domain_name, type=a.type, ttl=a.ttl, data=" ".join(a.data)
            ),
        ),
        metadata=cli.zone_metadata,
    )
    cli.emit(created, f"added (and served): {created.name}\n" + output.zone_records([created]))
    return 0


async def cmd_zone_record_delete(cli: Cli) -> int:
    a = cli.args
    name = (
        a.record if a.record.startswith("zones/") else f"{_zone_parent(a.zone)}/records/{a.record}"
    )
    await cli.zones().DeleteZoneRecord(
        zone_service_pb2.DeleteZoneRecordRequest(name=name), metadata=cli.zone_metadata
    )
    cli.emit({"deleted": name}, f"deleted: {name}")
    return 0


async def cmd_tsig_key_create(cli: Cli) -> int:
    a = cli.args
    created = await cli.tsig_keys().CreateTsigKey(
        tsig_key_service_pb2.CreateTsigKeyRequest(
            parent=_registration_name(a.registration),
            tsig_key=tsig_key_service_pb2.TsigKey(algorithm=output.TSIG_ALGORITHMS[a.algorithm][0]),
            tsig_key_id=a.id or "",
        ),
        metadata=cli.registry_metadata,
    )
    cli.emit(created, output.tsig_key_created(created, a.nameserver))
    return 0


async def cmd_tsig_key_list(cli: Cli) -> int:
    keys: list[tsig_key_service_pb2.TsigKey] = []
    token = ""
    while True:
        page = await cli.tsig_keys().ListTsigKeys(
            tsig_key_service_pb2.ListTsigKeysRequest(
                parent=_registration_name(cli.args.registration), page_size=100, page_token=token
            ),
            metadata=cli.registry_metadata,
        )
        keys += page.tsig_keys
        token = page.next_page_token
        if not token:
            break
    rows = [
        [k.name, k.key_name, output.tsig_algorithm(k.algorithm), output.when(k.create_time)]
        for k in keys
    ]
    cli.emit(list(keys), output.table(["NAME", "KEY NAME", "ALGORITHM", "CREATED"], rows))
    return 0


async def cmd_tsig_key_delete(cli: Cli) -> int:
    name = _tsig_key_name(cli.args.registration, cli.args.key)
    await cli.tsig_keys().DeleteTsigKey(
        tsig_key_service_pb2.DeleteTsigKeyRequest(name=name), metadata=cli.registry_metadata
    )
    cli.emit({"deleted": name}, f"deleted {name}")
    return 0


# -- agent -----------------------------------------------------------------------------------


async def cmd_agent(cli: Cli) -> int:
    """The delivery agent, talking to `--issuer` with `--token` (else ACMEZONE_AGENT_TOKEN)."""
    settings = AgentSettings()
    update: dict[str, object] = {"issuer": cli.args.issuer}
    if cli.args.token:
        update["token"] = SecretStr(cli.args.token)
    settings = settings.model_copy(update=update)
    configure_logging(settings.log_level, settings.log_format)
    return await run_agent(cli.args, settings)


# -- parsing ---------------------------------------------------------------------------------


def build_parser(settings: CliSettings) -> argparse.ArgumentParser:
    """The argument parser, with defaults from `ACMEZONE_CLI_*`."""
    parser = argparse.ArgumentParser(
        prog="acmezone", description="Operate acmezone: certificates, accounts, delegations."
    )
    parser.add_argument("--issuer", default=settings.issuer, help="issuer gRPC address")
    parser.add_argument("--registry", default=settings.registry, help="registry gRPC address")
    parser.add_argument("--dns", default=settings.dns, help="dns gRPC address")
    parser.add_argument(
        "--token", default=settings.token_value(), help="issuer operator token (or env)"
    )
    parser.add_argument(
        "--registry-token", default=settings.registry_token_value(), help="registry token"
    )
    parser.add_argument(
        "--tls-ca", type=Path, default=settings.tls_ca_file, help="connect with TLS, this CA"
    )
    parser.add_argument(
        "--tls-cert", type=Path, default=settings.tls_cert_file, help="client certificate (mTLS)"
    )
    parser.add_argument("--tls-key", type=Path, default=settings.tls_key_file, help="client key")
    parser.add_argument(
        "--tls-server-name", default=settings.tls_server_name, help="name the servers' cert holds"
    )
    parser.add_argument(
        "--zone-token", default=settings.zone_token_value(), help="dns zone edit token (or env)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("status", help="health of the three services").set_defaults(run=cmd_status)

    account = sub.add_parser("account", help="ACME accounts").add_subparsers(
        dest="sub", required=True
    )
    create = account.add_parser("create", help="register an ACME account")
    create.add_argument("--id", help="account id (default: random)")
    create.add_argument("--directory", help="ACME directory URL (default: the issuer's)")
    create.add_argument("--email", action="append", help="contact e-mail (repeatable)")
    create.add_argument("--agree-tos", action="store_true", help="agree to the CA's terms")
    create.add_argument("--key-type", choices=sorted(_KEY_TYPES), default="ecdsa-p256")
    create.add_argument("--eab-kid", help="External Account Binding key id")
    create.add_argument("--eab-hmac", help="External Account Binding HMAC key (base64url)")
    create.set_defaults(run=cmd_account_create)
    account.add_parser("list", help="list accounts").set_defaults(run=cmd_account_list)
    show = account.add_parser("show", help="show one account")
    show.add_argument("name")
    show.set_defaults(run=cmd_account_show)
    delete = account.add_parser("delete", help="delete an account (not used by certificates)")
    delete.add_argument("name")
    delete.set_defaults(run=cmd_account_delete)

    cert = sub.add_parser("cert", help="certificates").add_subparsers(dest="sub", required=True)
    request = cert.add_parser("request", help="request a certificate and follow it live")
    request.add_argument("names", nargs="+", help="DNS names, e.g. '*.example.test' example.test")
    request.add_argument("--account", required=True, help="account id or name")
    request.add_argument("--id", help="certificate id (default: random)")
    challenge = request.add_mutually_exclusive_group()
    challenge.add_argument(
        "--challenge",
        choices=sorted(_CHALLENGE_TYPES),
        default="dns-01",
        help="how to prove control (auto: the best the CA offers per name)",
    )
    challenge.add_argument("--http01", action="store_true", help="shorthand: --challenge http-01")
    request.add_argument("--key-type", choices=sorted(_KEY_TYPES), default="ecdsa-p256")
    request.add_argument("--profile", help="ACME profile the CA offers")
    request.add_argument("--no-follow", action="store_true", help="return at once")
    request.add_argument("--timeout", type=float, default=600.0, help="seconds to follow")
    request.add_argument(
        "--add-cnames",
        action="store_true",
        help="add missing CNAMEs to zones the dns service serves itself (needs --zone-token)",
    )
    request.set_defaults(run=cmd_cert_request)
    cert.add_parser("list", help="list certificates").set_defaults(run=cmd_cert_list)
    for verb, func, helptext in (
        ("show", cmd_cert_show, "show one certificate"),
        ("delete", cmd_cert_delete, "delete a certificate (does not revoke)"),
    ):
        command = cert.add_parser(verb, help=helptext)
        command.add_argument("name")
        command.set_defaults(run=func)
    watch = cert.add_parser("watch", help="follow a certificate until it settles")
    watch.add_argument("name")
    watch.add_argument("--timeout", type=float, default=600.0)
    watch.set_defaults(run=cmd_cert_watch)
    renew = cert.add_parser("renew", help="renew now")
    renew.add_argument("name")
    renew.add_argument("--follow", action="store_true", help="follow until issued")
    renew.add_argument("--timeout", type=float, default=600.0)
    renew.set_defaults(run=cmd_cert_renew)
    revoke = cert.add_parser("revoke", help="revoke at the CA and stop renewing")
    revoke.add_argument("name")
    revoke.add_argument("--reason", choices=sorted(_REASONS), default="unspecified")
    revoke.set_defaults(run=cmd_cert_revoke)
    export = cert.add_parser("export", help="chain and private key (needs the token)")
    export.add_argument("name")
    export.add_argument("--out-dir", type=Path, help="write fullchain.pem and privkey.pem here")
    export.set_defaults(run=cmd_cert_export)

    delegation = sub.add_parser("delegation", help="_acme-challenge CNAMEs").add_subparsers(
        dest="sub", required=True
    )
    check = delegation.add_parser("check", help="the CNAME a domain needs, and whether it is set")
    check.add_argument("domain")
    check.add_argument(
        "--challenge",
        choices=["dns-01", "dns-account-01"],
        default="dns-01",
        help="dns-account-01: the account's own label under _acme-challenge",
    )
    check.add_argument("--account", help="account id or name (for dns-account-01)")
    check.set_defaults(run=cmd_delegation_check)

    registration = sub.add_parser("registration", help="registry registrations").add_subparsers(
        dest="sub", required=True
    )
    rcreate = registration.add_parser("create", help="create a registration")
    rcreate.add_argument("--id", help="subdomain label (default: random UUID)")
    rcreate.add_argument("--allow", action="append", help="allowed source CIDR (repeatable)")
    rcreate.add_argument("--description")
    rcreate.add_argument(
        "--for-domain",
        action="append",
        help="the domain the registration will validate (repeatable): prints its CNAME",
    )
    rcreate.add_argument(
        "--cert-manager",
        action="store_true",
        help="print cert-manager's acme-dns Secret and Issuer solver instead",
    )
    rcreate.add_argument(
        "--acme-dns-url",
        default="http://127.0.0.1:8053",
        help="the registry's acme-dns HTTP API as cert-manager reaches it",
    )
    rcreate.add_argument("--secret-name", default="acmezone-acme-dns")
    rcreate.add_argument("--namespace", default="default", help="namespace of Secret and Issuer")
    rcreate.set_defaults(run=cmd_registration_create)
    registration.add_parser("list", help="list registrations").set_defaults(
        run=cmd_registration_list
    )
    for verb, func in (("show", cmd_registration_show), ("delete", cmd_registration_delete)):
        command = registration.add_parser(verb)
        command.add_argument("name")
        command.set_defaults(run=func)

    tsig = sub.add_parser(
        "tsig-key", help="TSIG keys for RFC 2136 updates (nsupdate, lego, certbot)"
    ).add_subparsers(dest="sub", required=True)
    tcreate = tsig.add_parser("create", help="create a key; prints its secret once")
    tcreate.add_argument("registration", help="registration subdomain or name")
    tcreate.add_argument("--id", help="key id, a DNS label (default: random)")
    tcreate.add_argument(
        "--algorithm", choices=sorted(output.TSIG_ALGORITHMS), default="hmac-sha256"
    )
    tcreate.add_argument(
        "--nameserver",
        default="127.0.0.1:5353",
        help="the dns service's address to print in the client settings",
    )
    tcreate.set_defaults(run=cmd_tsig_key_create)
    tlist = tsig.add_parser("list", help="list a registration's keys (no secrets)")
    tlist.add_argument("registration")
    tlist.set_defaults(run=cmd_tsig_key_list)
    tdelete = tsig.add_parser("delete", help="delete a key; updates signed with it are refused")
    tdelete.add_argument("registration")
    tdelete.add_argument("key", help="key id or full resource name")
    tdelete.set_defaults(run=cmd_tsig_key_delete)

    delivery.add_commands(sub)

    agent = sub.add_parser("agent", help="install certificates as files and keep them current")
    add_agent_arguments(agent)
    agent.set_defaults(run=cmd_agent)

    zrec = sub.add_parser(
        "zone-record", help="records of static zones served by dns (zone files, live)"
    ).add_subparsers(dest="sub", required=True)
    zlist = zrec.add_parser("list", help="a static zone's records, with their ids")
    zlist.add_argument("zone", help="zone apex, e.g. example.test")
    zlist.set_defaults(run=cmd_zone_record_list)
    zadd = zrec.add_parser("add", help="add a record to the zone file; served at once")
    zadd.add_argument("zone")
    zadd.add_argument("domain_name", help="owner, fully qualified, e.g. _acme-challenge.x.test.")
    zadd.add_argument("type", help="CNAME, TXT, A, ...")
    zadd.add_argument("data", nargs="+", help="record data, e.g. x.acme.example.test.")
    zadd.add_argument("--ttl", type=int, default=0, help="seconds (default: the zone's)")
    zadd.set_defaults(run=cmd_zone_record_add)
    zdel = zrec.add_parser("delete", help="remove a record from the zone file")
    zdel.add_argument("zone")
    zdel.add_argument("record", help="record id (from list) or full resource name")
    zdel.set_defaults(run=cmd_zone_record_delete)
    return parser


async def run(argv: Sequence[str] | None, out: TextIO) -> int:
    """Parse and run one command; gRPC errors become a message and exit status 1."""
    args = build_parser(CliSettings()).parse_args(argv)
    cli = Cli(args, out)
    try:
        result: int = await args.run(cli)
        return result
    except grpc.aio.AioRpcError as exc:
        message = f"error: {exc.code().name}: {exc.details()}"
        violations = output.field_violations(exc)
        if violations:
            message += "\n" + "\n".join(f"  {f}: {d}" for f, d in violations)
        if cli.json:
            print(
                json.dumps(
                    {"error": exc.code().name, "message": exc.details(), "fields": dict(violations)}
                ),
                file=out,
            )
        else:
            print(message, file=sys.stderr)
        return 1
    finally:
        await cli.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The `acmezone` entry point."""
    try:
        return asyncio.run(run(argv, sys.stdout))
    except BrokenPipeError:
        # The reader went away (`acmezone cert watch x | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
