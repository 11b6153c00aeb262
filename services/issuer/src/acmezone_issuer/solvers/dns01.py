"""DNS-01 through delegation: registry registrations, CNAME checks, TXT values, propagation.

For each base domain the issuer creates one registry registration the first time it is needed and
keeps it (sealed password in the database), so the `_acme-challenge` CNAME a domain owner adds once
stays valid for every renewal. dns-account-01 works the same way at the account's own owner name
(`_<label>._acme-challenge.<domain>`), with a registration of its own per account and domain, so
two accounts never share TXT values (or the registry's per-registration limit on them).
Before an order is placed every CNAME is checked through the configured resolver; after TXT
values are set, the same resolver must answer them before the CA is told to look, so the CA
never sees a missing value.

Talks to the registry only through its gRPC stubs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import grpc
from google.protobuf import duration_pb2

from acmezone.registry.v1 import (
    record_feed_service_pb2,
    record_feed_service_pb2_grpc,
    registration_service_pb2,
    registration_service_pb2_grpc,
    txt_record_service_pb2,
    txt_record_service_pb2_grpc,
)
from acmezone_common.addresses import HostPort
from acmezone_common.sql import utcnow
from acmezone_issuer.challenges import (
    ChallengeType,
    challenge_owner,
    parse_persist_value,
    persist_value,
)
from acmezone_issuer.errors import PropagationTimeoutError, RegistryError
from acmezone_issuer.keys import KeySealer
from acmezone_issuer.storage.repository import Repository
from acmezone_issuer.storage.tables import DelegationRow

logger = logging.getLogger(__name__)

_RPC_TIMEOUT = 10.0
_DNS_TIMEOUT = 2.0
# Enough for the apex and the wildcard of one domain in two overlapping orders.
_MAX_TXT_VALUES = 4


@dataclass(frozen=True)
class CnameCheck:
    """The outcome of checking one `_acme-challenge` CNAME."""

    domain: str
    method: ChallengeType
    cname_name: str
    cname_target: str
    ready: bool
    detail: str
    # dns-persist-01 only: the value to publish at cname_name (if not delegating), and the
    # earliest persistUntil of the records that authorize the account (None: no end).
    txt_value: str = ""
    persist_until: datetime | None = None


class Resolver:
    """Asks one DNS server (the configured resolver) or the system resolver."""

    def __init__(self, server: str | None) -> None:
        self._server = HostPort.parse(server) if server else None

    async def query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """One query; TCP retry when the UDP answer is truncated."""
        if self._server is None:
            resolver = dns.asyncresolver.Resolver()
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False)
            assert answer.response is not None
            return answer.response
        request = dns.message.make_query(name, rdtype)
        response = await dns.asyncquery.udp(
            request, self._server.host, port=self._server.port, timeout=_DNS_TIMEOUT
        )
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(
                request, self._server.host, port=self._server.port, timeout=_DNS_TIMEOUT
            )
        return response

    async def cname_of(self, name: str) -> tuple[str | None, str]:
        """(the CNAME target of `name` or None, what was seen, for people)."""
        try:
            response = await self.query(name, dns.rdatatype.CNAME)
        except (dns.exception.DNSException, OSError) as exc:
            return None, f"DNS query failed: {exc}"
        if response.rcode() != dns.rcode.NOERROR:
            return None, dns.rcode.to_text(response.rcode())
        qname = dns.name.from_text(name)
        for rrset in response.answer:
            if rrset.name == qname and rrset.rdtype == dns.rdatatype.CNAME:
                target = rrset[0].target.to_text(omit_final_dot=True).lower()
                return target, f"CNAME points to {target}"
        return None, "no CNAME record"

    async def txt_values(self, name: str) -> set[str]:
        """Every TXT string at `name` (following CNAMEs the server includes)."""
        response = await self.query(name, dns.rdatatype.TXT)
        values: set[str] = set()
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    values.add(b"".join(rdata.strings).decode())
        return values


class Dns01Solver:
    """Delegations, CNAME checks and TXT values for DNS-01."""

    def __init__(
        self,
        repository: Repository,
        sealer: KeySealer,
        registry_channel: grpc.aio.Channel,
        resolver: Resolver,
        *,
        registry_token: str | None,
        propagation_timeout: float,
        registration_id_from_domain: bool = False,
    ) -> None:
        self._repository = repository
        self._sealer = sealer
        self._registrations = registration_service_pb2_grpc.RegistrationServiceStub(
            registry_channel
        )
        self._txt = txt_record_service_pb2_grpc.TxtRecordServiceStub(registry_channel)
        self._feed = record_feed_service_pb2_grpc.RecordFeedServiceStub(registry_channel)
        self._resolver = resolver
        self._registry_token = registry_token
        self._propagation_timeout = propagation_timeout
        self._create_lock = asyncio.Lock()
        self._id_from_domain = registration_id_from_domain

    async def delegation(
        self, domain: str, method: ChallengeType = ChallengeType.DNS01, account_url: str = ""
    ) -> DelegationRow:
        """The registration for a base domain (dns-01) or for an account's label on it
        (dns-account-01), created at the registry the first time.

        dns-01 registrations are stored under the domain itself, dns-account-01 ones under
        their whole owner name: it starts with `_`, which no certificate domain can.
        """
        owner = challenge_owner(method, domain, account_url)
        key = owner if method == ChallengeType.DNS_ACCOUNT01 else domain
        if len(owner) > 253:
            raise RegistryError(f"{owner}: the challenge owner name is longer than 253 characters")
        existing = await self._repository.get_delegation(key)
        if existing is not None:
            return existing
        async with self._create_lock:
            existing = await self._repository.get_delegation(key)
            if existing is not None:
                return existing
            metadata = self._token_metadata()
            label = key.replace(".", "-")
            named = self._id_from_domain and len(label) <= 63 and key == domain
            request = registration_service_pb2.CreateRegistrationRequest(
                registration=registration_service_pb2.Registration(
                    description=f"acmezone issuer: {owner}",
                    max_txt_values=_MAX_TXT_VALUES,
                ),
                registration_id=label if named else "",
            )
            try:
                created = await self._registrations.CreateRegistration(
                    request, metadata=metadata, timeout=_RPC_TIMEOUT
                )
            except grpc.aio.AioRpcError as exc:
                raise RegistryError(
                    f"registry CreateRegistration failed: {exc.code().name}: {exc.details()}"
                ) from exc
            row = DelegationRow(
                domain=key,
                registration_name=created.name,
                username=created.username,
                sealed_password=self._sealer.seal(created.password.encode(), f"delegation/{key}"),
                fulldomain=created.fulldomain.lower().rstrip("."),
                create_time=utcnow(),
            )
            logger.info(
                "registration created for domain",
                extra={"owner": owner, "registration": created.name},
            )
            return await self._repository.insert_delegation(row)

    async def check(
        self, domain: str, method: ChallengeType = ChallengeType.DNS01, account_url: str = ""
    ) -> CnameCheck:
        """Whether the challenge owner name of `domain` (`_acme-challenge.<domain>`, or the
        account's label under it) is a CNAME to its registration."""
        delegation = await self.delegation(domain, method, account_url)
        cname_name = challenge_owner(method, domain, account_url)
        target, detail = await self._resolver.cname_of(cname_name)
        ready = target == delegation.fulldomain
        return CnameCheck(
            domain=domain,
            method=method,
            cname_name=cname_name,
            cname_target=delegation.fulldomain,
            ready=ready,
            detail="" if ready else detail,
        )

    async def check_persist(
        self, domain: str, account_url: str, issuer_domains: list[str], wildcard: bool
    ) -> CnameCheck:
        """Whether `_validation-persist.<domain>` holds a dns-persist-01 record for this account
        and CA; when it does not but is a CNAME to its registration, publish the record there
        as a persistent value (once: later checks find it) and wait until DNS answers it.

        The operator may also publish the record directly; then nothing is written at all.
        """
        method = ChallengeType.DNS_PERSIST01
        delegation = await self.delegation(domain, method, account_url)
        owner = challenge_owner(method, domain, account_url)
        wanted = persist_value(issuer_domains[0], account_url, wildcard)
        try:
            seen = await self._resolver.txt_values(owner)
        except (dns.exception.DNSException, OSError):
            seen = set()
        now = utcnow()
        records = [
            r
            for r in (parse_persist_value(v) for v in seen)
            if r is not None and r.authorizes(issuer_domains, account_url, wildcard, now)
        ]
        result = CnameCheck(
            domain=domain,
            method=method,
            cname_name=owner,
            cname_target=delegation.fulldomain,
            ready=True,
            detail="",
            txt_value=wanted,
        )
        if records:
            ends = [r.persist_until for r in records]
            until = None if None in ends else min(e for e in ends if e is not None)
            return replace(result, persist_until=until)
        target, detail = await self._resolver.cname_of(owner)
        if target == delegation.fulldomain:
            await self.wait_replicas(await self.present(delegation, wanted, persistent=True))
            await self.wait_propagated({delegation.fulldomain: {wanted}})
            logger.info("dns-persist-01 record published", extra={"owner": owner})
            return result
        return replace(
            result,
            ready=False,
            detail=f"{detail}; no TXT record for {' or '.join(issuer_domains)} and this account",
        )

    def _token_metadata(self) -> tuple[tuple[str, str], ...]:
        """The operator token, when the registry has one."""
        if self._registry_token:
            return (("authorization", f"Bearer {self._registry_token}"),)
        return ()

    def _credentials(self, delegation: DelegationRow) -> tuple[tuple[str, str], ...]:
        password = self._sealer.open(
            delegation.sealed_password, f"delegation/{delegation.domain}"
        ).decode()
        return (("x-api-user", delegation.username), ("x-api-key", password))

    async def present(
        self, delegation: DelegationRow, value: str, *, persistent: bool = False
    ) -> int:
        """Publish one TXT value at the registration's fulldomain (a persistent one for
        dns-persist-01: the registry neither trims nor expires it); returns the feed revision
        that carries it."""
        try:
            record = await self._txt.AddTxtValue(
                txt_record_service_pb2.AddTxtValueRequest(
                    name=f"{delegation.registration_name}/txtRecord",
                    value=value,
                    persistent=persistent,
                ),
                metadata=self._credentials(delegation),
                timeout=_RPC_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            raise RegistryError(
                f"registry AddTxtValue failed: {exc.code().name}: {exc.details()}"
            ) from exc
        return int(record.revision)

    async def wait_replicas(self, revision: int) -> None:
        """Wait until every dns replica serves `revision`: CAs validate from several vantage
        points, each may reach another replica, and none reuses another's answer. Raises
        PropagationTimeoutError with the registry's account of the replicas behind."""
        if revision <= 0:
            return
        try:
            await self._feed.WaitForReplicas(
                record_feed_service_pb2.WaitForReplicasRequest(
                    revision=revision,
                    timeout=duration_pb2.Duration(
                        seconds=max(1, min(300, int(self._propagation_timeout)))
                    ),
                ),
                metadata=self._token_metadata(),
                timeout=self._propagation_timeout + _RPC_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return  # a registry without replica reports: the resolver check stands alone
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PropagationTimeoutError(str(exc.details())) from exc
            raise RegistryError(
                f"registry WaitForReplicas failed: {exc.code().name}: {exc.details()}"
            ) from exc

    async def cleanup(self, delegation: DelegationRow, value: str) -> None:
        """Withdraw one TXT value; failures are logged, not raised (the registry ages them)."""
        try:
            await self._txt.RemoveTxtValue(
                txt_record_service_pb2.RemoveTxtValueRequest(
                    name=f"{delegation.registration_name}/txtRecord", value=value
                ),
                metadata=self._credentials(delegation),
                timeout=_RPC_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            logger.warning(
                "could not remove TXT value",
                extra={"domain": delegation.domain, "code": exc.code().name},
            )

    async def wait_propagated(self, expected: dict[str, set[str]]) -> None:
        """Wait until the resolver answers every value at every fulldomain."""
        deadline = time.monotonic() + self._propagation_timeout
        missing: dict[str, set[str]] = dict(expected)
        delay = 0.05
        while True:
            for fulldomain, values in list(missing.items()):
                try:
                    seen = await self._resolver.txt_values(fulldomain)
                except (dns.exception.DNSException, OSError):
                    seen = set()
                if values <= seen:
                    del missing[fulldomain]
            if not missing:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(missing))
                raise PropagationTimeoutError(
                    f"DNS did not answer the TXT values at {names} within "
                    f"{self._propagation_timeout:.0f}s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
