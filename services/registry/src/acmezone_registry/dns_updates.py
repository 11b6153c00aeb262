"""RFC 2136 dynamic updates signed with TSIG (RFC 8945), applied in one registry transaction.

The dns service forwards UPDATE messages here untouched, so TSIG secrets never leave the
registry, a deleted key stops working on every replica at once, and replays are caught in one
shared place. Steps, each answered the way RFC 2136 section 3 and RFC 8945 section 5 say:

1. Parse (FORMERR); only UPDATE (NOTIMP); only signed messages (REFUSED).
2. TSIG: unknown key or algorithm -> NOTAUTH/BADKEY, wrong MAC -> NOTAUTH/BADSIG (both unsigned),
   clock skew beyond the fudge -> NOTAUTH/BADTIME (signed, with our time in other data).
3. The caller's address must be inside the registration's allowed CIDRs (REFUSED).
4. Zone section: one SOA question (FORMERR) for our zone (NOTAUTH). With `follow_cnames`, a
   static zone of the dns service is accepted too when the replica found CNAMEs in it whose
   targets are the key's names: the update then applies to those targets.
5. Prerequisites and updates: well formed (FORMERR), inside the zone (NOTZONE), and only TXT
   records at the key's two names (REFUSED).
6. Prerequisites (YXDOMAIN, NXDOMAIN, YXRRSET, NXRRSET) are checked against the stored values
   and every change applied, atomically, in one feed revision (`failed_prerequisite` inside the
   storage transaction); a replayed signature is refused (NOTAUTH/BADTIME).

Every answer to a validly signed request is signed with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.rrset
import dns.tsig
from dns.rdtypes.ANY.TSIG import TSIG

from acmezone_common.errors import InvalidArgumentError, NotFoundError
from acmezone_registry import errors, validation
from acmezone_registry.access import IPAddress, address_allowed
from acmezone_registry.metrics import RegistryMetrics
from acmezone_registry.model import (
    ALIAS_OWNER,
    Prerequisite,
    PrerequisiteFailure,
    PrerequisiteKind,
    TsigKeyWithSecret,
    UpdateKind,
    UpdateOperation,
)
from acmezone_registry.storage.registrations import StoredRegistration
from acmezone_registry.storage.tsig_keys import TsigKeyRepository
from acmezone_registry.storage.txt_values import TxtValueRepository

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_OPCODE_MASK = 0x7800
_META_TYPES = frozenset(
    {
        dns.rdatatype.ANY,
        dns.rdatatype.AXFR,
        dns.rdatatype.IXFR,
        dns.rdatatype.MAILA,
        dns.rdatatype.MAILB,
    }
)
_FAILURE_RCODES: Mapping[PrerequisiteFailure, dns.rcode.Rcode] = {
    PrerequisiteFailure.YXDOMAIN: dns.rcode.YXDOMAIN,
    PrerequisiteFailure.NXDOMAIN: dns.rcode.NXDOMAIN,
    PrerequisiteFailure.YXRRSET: dns.rcode.YXRRSET,
    PrerequisiteFailure.NXRRSET: dns.rcode.NXRRSET,
}


@dataclass(frozen=True)
class UpdateResult:
    """The DNS response to send back, its rcode, and the revision holding the change (or 0)."""

    message: bytes
    rcode: int
    revision: int


@dataclass(frozen=True)
class _Verified:
    """A message whose TSIG verified, with the key and the registration it belongs to."""

    message: dns.message.Message
    key: dns.tsig.Key
    key_record: TsigKeyWithSecret
    stored: StoredRegistration


class _Reject(Exception):  # noqa: N818 - control flow inside this module, never escapes
    """Answer the (signed) request with this rcode and stop."""

    def __init__(self, rcode: dns.rcode.Rcode, why: str) -> None:
        super().__init__(why)
        self.rcode = rcode
        self.why = why


def _unverified(_message: dns.message.Message, _name: dns.name.Name) -> bool:
    """A keyring that makes dnspython record the TSIG without checking it (first pass)."""
    return False


_TSIG_ERROR_NAMES = {0: "NOERROR", 16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}


def tsig_error_name(error: int) -> str:
    """The RFC 8945 name of a TSIG error. dnspython's Rcode enum names 16 BADVERS (the EDNS
    meaning of the same number), which is wrong in a TSIG record."""
    return _TSIG_ERROR_NAMES.get(int(error), str(int(error)))


def failed_prerequisite(
    prerequisites: Sequence[Prerequisite], values: Mapping[str, Sequence[str]]
) -> PrerequisiteFailure | None:
    """The first failure among an update's prerequisites, given the values now stored at each
    owner name ("" and ALIAS_OWNER); None when all hold."""
    for prerequisite in prerequisites:
        failure = _prerequisite_failure(prerequisite, values[prerequisite.owner])
        if failure is not None:
            return failure
    return None


def _prerequisite_failure(
    prerequisite: Prerequisite, values: Sequence[str]
) -> PrerequisiteFailure | None:
    """RFC 2136 section 3.2 for names that hold nothing but TXT records."""
    txt = set(values) if prerequisite.is_txt else set()
    in_use = bool(values)
    kind = prerequisite.kind
    if kind is PrerequisiteKind.NAME_IN_USE:
        return None if in_use else PrerequisiteFailure.NXDOMAIN
    if kind is PrerequisiteKind.NAME_NOT_IN_USE:
        return PrerequisiteFailure.YXDOMAIN if in_use else None
    if kind is PrerequisiteKind.RRSET_EXISTS:
        return None if txt else PrerequisiteFailure.NXRRSET
    if kind is PrerequisiteKind.RRSET_DOES_NOT_EXIST:
        return PrerequisiteFailure.YXRRSET if txt else None
    return None if txt and txt == set(prerequisite.values) else PrerequisiteFailure.NXRRSET


class DnsUpdates:
    """Verifies and applies UPDATE messages for the challenge zone."""

    def __init__(
        self,
        keys: TsigKeyRepository,
        txt_values: TxtValueRepository,
        metrics: RegistryMetrics,
        *,
        zone: str,
        strict_txt_values: bool,
        settle: Callable[[int], Awaitable[None]] | None = None,
        follow_cnames: bool = False,
    ) -> None:
        """`settle(revision)` holds the answer to an applied update until the change is
        served (`RecordFeed.settle`); None answers at once."""
        self._keys = keys
        self._txt_values = txt_values
        self._metrics = metrics
        self._zone = dns.name.from_text(zone.rstrip(".") + ".")
        self._strict = strict_txt_values
        self._settle = settle
        self._follow_cnames = follow_cnames

    async def apply(
        self,
        wire: bytes,
        client_address: IPAddress | None,
        cname_targets: Mapping[dns.name.Name, dns.name.Name] | None = None,
    ) -> UpdateResult:
        """Process one UPDATE message and return the response to send. `cname_targets` are
        the delegations the dns replica found for an UPDATE of one of its static zones."""
        _check_length(wire, "message")
        result = await self._apply(wire, client_address, cname_targets or {})
        self._metrics.dns_updates.labels(dns.rcode.to_text(dns.rcode.Rcode(result.rcode))).inc()
        if self._settle is not None and result.revision:
            await self._settle(result.revision)
        return result

    async def _apply(
        self,
        wire: bytes,
        client_address: IPAddress | None,
        cname_targets: Mapping[dns.name.Name, dns.name.Name],
    ) -> UpdateResult:
        try:
            query = dns.message.from_wire(wire, keyring=_unverified)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return _header_only(wire, dns.rcode.FORMERR)
        if query.opcode() != dns.opcode.UPDATE:
            return _header_only(wire, dns.rcode.NOTIMP)
        if query.tsig is None:
            return self._plain(query, dns.rcode.REFUSED, "unsigned updates are refused")
        checked = await self._verify(wire, query)
        if isinstance(checked, UpdateResult):
            return checked
        try:
            return await self._apply_verified(checked, client_address, cname_targets)
        except _Reject as reject:
            return self._signed(checked.message, checked.key, reject.rcode, why=reject.why)

    async def _verify(self, wire: bytes, query: dns.message.Message) -> _Verified | UpdateResult:
        """Check the TSIG of a signed message (`query`, parsed without checking): the verified
        message and its key, or the response RFC 8945 section 5.2 prescribes for the failure."""
        assert query.tsig is not None
        request_tsig: TSIG = query.tsig[0]
        found = await self._keys.find_tsig_key(query.tsig.name.to_text().lower())
        if found is None or dns.name.from_text(found[0].key.algorithm) != request_tsig.algorithm:
            return self._tsig_failure(query, dns.rcode.BADKEY, "unknown key or algorithm")
        key_record, stored = found
        key = dns.tsig.Key(
            query.tsig.name, base64.b64decode(key_record.secret), key_record.key.algorithm
        )
        try:
            verified = dns.message.from_wire(wire, keyring={query.tsig.name: key})
        except dns.tsig.BadSignature:
            return self._tsig_failure(query, dns.rcode.BADSIG, "signature does not verify")
        except dns.tsig.BadTime:
            return self._signed(
                query, key, dns.rcode.NOTAUTH, tsig_error=dns.rcode.BADTIME, why="clock skew"
            )
        except (dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return self._tsig_failure(query, dns.rcode.BADKEY, "key does not match")
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return _header_only(wire, dns.rcode.FORMERR)
        return _Verified(verified, key, key_record, stored)

    async def sign_response(self, query_wire: bytes, response_wire: bytes) -> UpdateResult:
        """The dns service's answer to a TSIG-signed query, signed with the query's key once
        the query's signature verifies (RFC 8945 section 5.3); otherwise NOTAUTH with the TSIG
        error. An unsigned query gets its answer back unchanged."""
        _check_length(query_wire, "query")
        _check_length(response_wire, "response")
        try:
            response = dns.message.from_wire(response_wire)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            raise InvalidArgumentError(
                errors.INVALID_DNS_MESSAGE, "the response does not parse", field="response"
            ) from None
        if response_wire[:2] != query_wire[:2]:
            raise InvalidArgumentError(
                errors.INVALID_DNS_MESSAGE, "the response's ID is not the query's", field="response"
            )
        try:
            query = dns.message.from_wire(query_wire, keyring=_unverified)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return _header_only(query_wire, dns.rcode.FORMERR)
        if query.tsig is None:
            return UpdateResult(response_wire, response.rcode(), 0)
        checked = await self._verify(query_wire, query)
        if isinstance(checked, UpdateResult):
            return checked
        verified, key = checked.message, checked.key
        verified_tsig: TSIG = verified.tsig[0]  # type: ignore[index]
        response.use_tsig(key, fudge=verified_tsig.fudge, original_id=verified_tsig.original_id)
        response.request_mac = verified_tsig.mac
        return UpdateResult(response.to_wire(), response.rcode(), 0)

    async def _apply_verified(
        self,
        checked: _Verified,
        client_address: IPAddress | None,
        cname_targets: Mapping[dns.name.Name, dns.name.Name],
    ) -> UpdateResult:
        update, key = checked.message, checked.key
        registration = checked.stored.registration
        if not address_allowed(client_address, registration.allowed_cidrs):
            raise _Reject(dns.rcode.REFUSED, f"source {client_address} not in allowed CIDRs")
        zone_section = update.sections[0]
        if len(zone_section) != 1 or zone_section[0].rdtype != dns.rdatatype.SOA:
            raise _Reject(dns.rcode.FORMERR, "zone section must hold exactly one SOA question")
        zone = zone_section[0].name.canonicalize()
        fqdn = dns.name.from_text(f"{registration.subdomain}.{self._zone}")
        owners = {fqdn: "", dns.name.Name((ALIAS_OWNER.encode(), *fqdn.labels)): ALIAS_OWNER}
        if zone != self._zone:
            owners = self._delegated(zone, owners, cname_targets)
        prerequisites = [self._prerequisite(rrset, owners, zone) for rrset in update.sections[1]]
        operations = [
            op for rrset in update.sections[2] for op in self._operations(rrset, owners, zone)
        ]
        request_tsig: TSIG = update.tsig[0]  # type: ignore[index]
        expires = datetime.fromtimestamp(request_tsig.time_signed + request_tsig.fudge, tz=UTC)
        try:
            outcome = await self._txt_values.apply_update(
                registration.subdomain,
                lambda values: failed_prerequisite(prerequisites, values),
                operations,
                replay_guard=(hashlib.sha256(request_tsig.mac).hexdigest(), expires),
            )
        except NotFoundError:
            # The registration (and with it the key) was deleted after we looked the key up.
            return self._tsig_failure(update, dns.rcode.BADKEY, "key deleted")
        if outcome is None:
            return self._signed(
                update, key, dns.rcode.NOTAUTH, tsig_error=dns.rcode.BADTIME, why="replayed"
            )
        if outcome.failure is not None:
            return self._signed(update, key, _FAILURE_RCODES[outcome.failure], why="prerequisite")
        logger.info(
            "dynamic update applied",
            extra={
                "key_name": checked.key_record.key.key_name,
                "changes": len(operations),
                "revision": outcome.revision,
            },
        )
        return self._signed(update, key, dns.rcode.NOERROR, revision=outcome.revision)

    # -- sections -----------------------------------------------------------------------------

    def _delegated(
        self,
        zone: dns.name.Name,
        owners: Mapping[dns.name.Name, str],
        cname_targets: Mapping[dns.name.Name, dns.name.Name],
    ) -> dict[dns.name.Name, str]:
        """The key's names as an UPDATE of another zone may reach them: through the static
        CNAMEs of that zone (as the dns replica found them) whose target is one of the key's
        names. Only with `update_follow_cnames`; otherwise, or with no such CNAME, NOTAUTH as
        for any zone that is not ours."""
        if not self._follow_cnames or not cname_targets:
            raise _Reject(dns.rcode.NOTAUTH, f"not authoritative for {zone}")
        delegated = {
            alias: owners[target]
            for alias, target in cname_targets.items()
            if alias.is_subdomain(zone) and target in owners
        }
        if not delegated:
            raise _Reject(dns.rcode.REFUSED, f"no CNAME in {zone} leads to this key's names")
        return delegated

    def _owner(
        self, rrset: dns.rrset.RRset, owners: Mapping[dns.name.Name, str], zone: dns.name.Name
    ) -> str:
        if not rrset.name.is_subdomain(zone):
            raise _Reject(dns.rcode.NOTZONE, f"{rrset.name} is outside the zone")
        owner = owners.get(rrset.name.canonicalize())
        if owner is None:
            raise _Reject(dns.rcode.REFUSED, f"this key may not touch {rrset.name}")
        return owner

    def _prerequisite(
        self, rrset: dns.rrset.RRset, owners: Mapping[dns.name.Name, str], zone: dns.name.Name
    ) -> Prerequisite:
        """RFC 2136 section 3.2 checks that need no stored state, then the prerequisite."""
        if rrset.ttl != 0:
            raise _Reject(dns.rcode.FORMERR, "prerequisite TTL must be 0")
        owner = self._owner(rrset, owners, zone)
        is_txt = rrset.rdtype == dns.rdatatype.TXT
        any_type = rrset.rdtype == dns.rdatatype.ANY
        if rrset.deleting in (dns.rdataclass.ANY, dns.rdataclass.NONE):
            if len(rrset):
                raise _Reject(dns.rcode.FORMERR, "class ANY/NONE prerequisites carry no data")
            if rrset.deleting == dns.rdataclass.ANY:
                kind = PrerequisiteKind.NAME_IN_USE if any_type else PrerequisiteKind.RRSET_EXISTS
            else:
                kind = (
                    PrerequisiteKind.NAME_NOT_IN_USE
                    if any_type
                    else PrerequisiteKind.RRSET_DOES_NOT_EXIST
                )
            return Prerequisite(kind, owner, is_txt=is_txt)
        if rrset.rdclass != dns.rdataclass.IN or rrset.rdtype in _META_TYPES:
            raise _Reject(dns.rcode.FORMERR, "malformed prerequisite")
        values = frozenset(self._txt_value(rdata) for rdata in rrset) if is_txt else frozenset()
        return Prerequisite(PrerequisiteKind.RRSET_EQUALS, owner, is_txt=is_txt, values=values)

    def _operations(
        self, rrset: dns.rrset.RRset, owners: Mapping[dns.name.Name, str], zone: dns.name.Name
    ) -> list[UpdateOperation]:
        """RFC 2136 section 3.4.1 prescan and permissions for one update RRset."""
        if rrset.rdtype in (
            dns.rdatatype.AXFR,
            dns.rdatatype.IXFR,
            dns.rdatatype.MAILA,
            dns.rdatatype.MAILB,
        ):
            raise _Reject(dns.rcode.FORMERR, "meta type in update section")
        owner = self._owner(rrset, owners, zone)
        is_txt = rrset.rdtype == dns.rdatatype.TXT
        if rrset.deleting == dns.rdataclass.ANY:
            if rrset.ttl != 0 or len(rrset):
                raise _Reject(dns.rcode.FORMERR, "delete-RRset carries no data and TTL 0")
            if not is_txt and rrset.rdtype != dns.rdatatype.ANY:
                raise _Reject(dns.rcode.REFUSED, "only TXT records may be changed")
            return [UpdateOperation(UpdateKind.DELETE_RRSET, owner)]
        if rrset.deleting == dns.rdataclass.NONE:
            if rrset.ttl != 0:
                raise _Reject(dns.rcode.FORMERR, "delete-record TTL must be 0")
            if not is_txt:
                raise _Reject(dns.rcode.REFUSED, "only TXT records may be changed")
            return [
                UpdateOperation(UpdateKind.DELETE_VALUE, owner, self._txt_value(rdata))
                for rdata in rrset
            ]
        if rrset.rdclass != dns.rdataclass.IN or rrset.rdtype == dns.rdatatype.ANY:
            raise _Reject(dns.rcode.FORMERR, "malformed add")
        if not is_txt:
            raise _Reject(dns.rcode.REFUSED, "only TXT records may be changed")
        return [UpdateOperation(UpdateKind.ADD, owner, self._txt_value(rdata)) for rdata in rrset]

    def _txt_value(self, rdata: dns.rdata.Rdata) -> str:
        """One logical TXT value: its character-strings joined, as ACME clients mean them."""
        if not isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
            raise _Reject(dns.rcode.REFUSED, "only TXT records may be changed")
        try:
            value = b"".join(rdata.strings).decode("ascii")
            return validation.txt_value(value, field="update", strict=self._strict)
        except (UnicodeDecodeError, InvalidArgumentError):
            raise _Reject(dns.rcode.REFUSED, "TXT value not acceptable") from None

    # -- responses ----------------------------------------------------------------------------

    @staticmethod
    def _response(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        response = dns.message.Message(id=query.id)
        response.flags = _QR | (query.flags & _OPCODE_MASK)
        response.set_rcode(rcode)
        response.question = list(query.question)
        return response

    def _plain(self, query: dns.message.Message, rcode: dns.rcode.Rcode, why: str) -> UpdateResult:
        logger.info("dynamic update refused", extra={"rcode": rcode.name, "why": why})
        return UpdateResult(self._response(query, rcode).to_wire(), int(rcode), 0)

    def _tsig_failure(
        self, query: dns.message.Message, tsig_error: dns.rcode.Rcode, why: str
    ) -> UpdateResult:
        """NOTAUTH with an unsigned TSIG record carrying the error (RFC 8945 section 5.3.2)."""
        assert query.tsig is not None
        request: TSIG = query.tsig[0]
        response = self._response(query, dns.rcode.NOTAUTH)
        response.tsig = dns.rrset.from_rdata(
            query.tsig.name,
            0,
            TSIG(  # type: ignore[no-untyped-call]
                dns.rdataclass.ANY,
                dns.rdatatype.TSIG,
                request.algorithm,
                request.time_signed,
                request.fudge,
                b"",
                request.original_id,
                int(tsig_error),
                b"",
            ),
        )
        logger.info(
            "dynamic update refused",
            extra={"rcode": "NOTAUTH", "tsig_error": tsig_error_name(tsig_error), "why": why},
        )
        return UpdateResult(response.to_wire(), int(dns.rcode.NOTAUTH), 0)

    def _signed(
        self,
        query: dns.message.Message,
        key: dns.tsig.Key,
        rcode: dns.rcode.Rcode,
        *,
        tsig_error: dns.rcode.Rcode = dns.rcode.NOERROR,
        why: str = "",
        revision: int = 0,
    ) -> UpdateResult:
        """A response signed with the request's key, chained to the request's MAC."""
        assert query.tsig is not None
        request: TSIG = query.tsig[0]
        response = self._response(query, rcode)
        other = struct.pack("!Q", int(time.time()))[2:] if tsig_error == dns.rcode.BADTIME else b""
        response.use_tsig(
            key,
            fudge=request.fudge,
            original_id=request.original_id,
            tsig_error=int(tsig_error),
            other_data=other,
        )
        response.request_mac = request.mac
        if rcode != dns.rcode.NOERROR:
            logger.info(
                "dynamic update refused",
                extra={"rcode": rcode.name, "tsig_error": tsig_error_name(tsig_error), "why": why},
            )
        return UpdateResult(response.to_wire(), int(rcode), revision)


def _check_length(wire: bytes, field: str) -> None:
    """INVALID_ARGUMENT for anything that cannot be a DNS message."""
    if not 12 <= len(wire) <= 65535:
        raise InvalidArgumentError(
            errors.INVALID_DNS_MESSAGE,
            f"a DNS message is 12 to 65535 bytes, not {len(wire)}",
            field=field,
        )


def _header_only(wire: bytes, rcode: dns.rcode.Rcode) -> UpdateResult:
    """A bare response header echoing the ID and opcode, for messages we cannot parse."""
    (message_id, flags, *_counts) = _HEADER.unpack_from(wire)
    header = _HEADER.pack(message_id, _QR | (flags & _OPCODE_MASK) | int(rcode), 0, 0, 0, 0)
    return UpdateResult(header, int(rcode), 0)
