"""Records of static zones managed through the API: listed from the zone file, added and removed
by rewriting it, so the file stays the one source of truth an operator can still edit by hand.

A change is checked before anything is written: the new text must parse and validate as the
zone did at start (`static_zones.parse_zone_text`). An addition is appended as one line, so
comments and layout survive; a removal drops the one line whose removal takes away exactly that
record and nothing else (a record that cannot be removed that way, inside a multi-line entry
say, is reported rather than rewritten). The file is replaced atomically (a temporary file in
the same directory, fsync, rename), then reloaded and swapped into the store before the call
returns, so a query right after the answer sees the change. If the reload refuses the new set
(it validates all zones together) the old file is put back.

Edits are off unless a token is configured; callers then present it (compared in constant
time). Edits run one at a time, and a file changed by hand between reading and writing is
detected (ZONE_FILE_CHANGED) rather than overwritten.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from acmezone_common.errors import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from acmezone_common.paging import encode_page_token, page_size, seq_after
from acmezone_dns.errors import ZoneConfigError
from acmezone_dns.static_zones import StaticZone, parse_zone_text
from acmezone_dns.zone_reload import ZoneReloader

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_MAX_TTL = 2**31 - 1
_REFUSED_TYPES = {"SOA", "DNAME"}


@dataclass(frozen=True)
class ZoneRecordData:
    """One record of a static zone in presentation form."""

    apex: str
    domain_name: str
    type: str
    ttl: int
    data: str

    @property
    def record_id(self) -> str:
        """Stable identity: the same owner, type and data always give the same id."""
        text = f"{self.domain_name.lower()} {self.type} {self.data}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class RecordPage:
    """One page of records and the token of the next."""

    records: list[ZoneRecordData]
    next_page_token: str


def _records(zone: StaticZone) -> list[ZoneRecordData]:
    apex = zone.name.to_text()
    out = []
    for name, rrsets in zone.records.values():
        for rdtype, rdataset in rrsets.items():
            for rdata in rdataset:
                out.append(
                    ZoneRecordData(
                        apex,
                        name.to_text(),
                        dns.rdatatype.to_text(dns.rdatatype.RdataType(rdtype)),
                        int(rdataset.ttl),
                        rdata.to_text(),
                    )
                )
    out.sort(key=lambda r: (r.domain_name, r.type, r.data))
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ZoneEditor:
    """Lists, adds and removes records of the zone files' zones."""

    def __init__(
        self,
        zone_files: list[str],
        reloader: ZoneReloader,
        *,
        feed_zone: str,
        token: str | None,
    ) -> None:
        self._paths = [Path(p) for p in zone_files]
        self._reloader = reloader
        self._feed_zone = dns.name.from_text(feed_zone).canonicalize()
        self._token = token
        self._lock = asyncio.Lock()

    # -- reading ----------------------------------------------------------------------------

    async def _find(self, apex: str) -> tuple[Path, str, StaticZone]:
        """The zone file of `apex`, its text and its parsed zone."""
        try:
            wanted = dns.name.from_text(apex).canonicalize()
        except dns.exception.DNSException as exc:
            raise InvalidArgumentError("INVALID_NAME", f"not a zone name: {apex}") from exc
        if wanted == self._feed_zone:
            raise FailedPreconditionError(
                "ZONE_NOT_EDITABLE", "the challenge zone is filled by the registry's feed"
            )
        for path in self._paths:
            text, zone = await asyncio.to_thread(self._read, path)
            if zone is not None and zone.name == wanted:
                return path, text, zone
        raise NotFoundError("ZONE_NOT_FOUND", f"no zone file holds {wanted}")

    @staticmethod
    def _read(path: Path) -> tuple[str, StaticZone | None]:
        try:
            text = path.read_text()
        except OSError:
            return "", None
        try:
            return text, parse_zone_text(text, str(path))
        except ZoneConfigError:
            return text, None

    async def list_records(self, apex: str, size: int, page_token: str) -> RecordPage:
        """The zone file's records, a page at a time."""
        limit = page_size(size, default=DEFAULT_PAGE_SIZE, limit=MAX_PAGE_SIZE)
        start = seq_after(page_token)  # the token holds the offset the next page starts at
        _, _, zone = await self._find(apex)
        records = _records(zone)
        end = start + limit
        token = encode_page_token((end,)) if end < len(records) else ""
        return RecordPage(records[start:end], token)

    # -- changing ---------------------------------------------------------------------------

    def _authorise(self, token: str | None) -> None:
        if self._token is None:
            raise FailedPreconditionError(
                "ZONE_NOT_EDITABLE", "zone editing is off: this replica has no ZONE_EDIT_TOKEN"
            )
        if not token or not hmac.compare_digest(token.encode(), self._token.encode()):
            raise UnauthenticatedError(
                "TOKEN_REQUIRED", "zone edits need `authorization: Bearer <ZONE_EDIT_TOKEN>`"
            )

    async def create(self, apex: str, record: ZoneRecordData, token: str | None) -> ZoneRecordData:
        """Append one record to the zone file and serve it."""
        self._authorise(token)
        async with self._lock:
            path, text, zone = await self._find(apex)
            line, wanted = self._line(zone, record)
            if any(r.record_id == wanted.record_id for r in _records(zone)):
                raise AlreadyExistsError("RECORD_EXISTS", f"{line} is in the zone already")
            new_text = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
            created = self._check(new_text, path, wanted)
            await self._replace(path, text, new_text)
            return created

    def _line(self, zone: StaticZone, record: ZoneRecordData) -> tuple[str, ZoneRecordData]:
        """The zone file line of a requested record, every part checked."""
        try:
            owner = dns.name.from_text(record.domain_name).canonicalize()
        except dns.exception.DNSException as exc:
            raise InvalidArgumentError(
                "INVALID_RECORD", f"domain_name: {exc}", field="zone_record.domain_name"
            ) from exc
        if not owner.is_subdomain(zone.name):
            raise InvalidArgumentError(
                "INVALID_RECORD",
                f"{owner} is not inside the zone {zone.name}",
                field="zone_record.domain_name",
            )
        type_text = record.type.strip().upper()
        try:
            rdtype = dns.rdatatype.from_text(type_text)
        except dns.exception.DNSException as exc:
            raise InvalidArgumentError(
                "INVALID_RECORD", f"unknown type {record.type!r}", field="zone_record.type"
            ) from exc
        if type_text in _REFUSED_TYPES or dns.rdatatype.is_metatype(rdtype):
            raise InvalidArgumentError(
                "INVALID_RECORD",
                f"{type_text} records are not managed here",
                field="zone_record.type",
            )
        if not 0 <= record.ttl <= _MAX_TTL:
            raise InvalidArgumentError(
                "INVALID_RECORD", f"ttl must be 0 to {_MAX_TTL}", field="zone_record.ttl"
            )
        if "\n" in record.data or ";" in record.data or "$" in record.data[:1]:
            raise InvalidArgumentError(
                "INVALID_RECORD", "data must be one record's data", field="zone_record.data"
            )
        try:
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, rdtype, record.data, origin=zone.name, relativize=False
            )
        except (dns.exception.DNSException, ValueError) as exc:
            raise InvalidArgumentError(
                "INVALID_RECORD", f"data: {exc}", field="zone_record.data"
            ) from exc
        ttl = f" {record.ttl}" if record.ttl else ""
        data = rdata.to_text()
        line = f"{owner.to_text()}{ttl} IN {type_text} {data}"
        return line, ZoneRecordData(
            zone.name.to_text(), owner.to_text(), type_text, record.ttl, data
        )

    def _check(self, text: str, path: Path, wanted: ZoneRecordData) -> ZoneRecordData:
        """Validate the new text; the record as the zone now holds it."""
        try:
            zone = parse_zone_text(text, str(path))
        except ZoneConfigError as exc:
            raise InvalidArgumentError("INVALID_RECORD", str(exc)) from exc
        for record in _records(zone):
            if record.record_id == wanted.record_id:
                return record
        raise InvalidArgumentError("INVALID_RECORD", "the record did not come out as given")

    async def delete(self, apex: str, record_id: str, token: str | None) -> None:
        """Remove one record (by id) from the zone file and stop serving it."""
        self._authorise(token)
        async with self._lock:
            path, text, zone = await self._find(apex)
            before = {r.record_id: r for r in _records(zone)}
            target = before.get(record_id)
            if target is None:
                raise NotFoundError("RECORD_NOT_FOUND", f"no record {record_id} in {apex}")
            new_text = await asyncio.to_thread(self._without, text, path, target, set(before))
            await self._replace(path, text, new_text)

    @staticmethod
    def _without(text: str, path: Path, target: ZoneRecordData, ids: set[str]) -> str:
        """The text with the one line dropped whose removal removes exactly `target`."""
        lines = text.splitlines(keepends=True)
        type_word = re.compile(rf"(?i)(^|\s){re.escape(target.type)}(\s|$)")
        for i, line in enumerate(lines):
            code = line.split(";", 1)[0]
            if not type_word.search(code):
                continue
            candidate = "".join(lines[:i] + lines[i + 1 :])
            try:
                zone = parse_zone_text(candidate, str(path))
            except ZoneConfigError:
                continue
            if {r.record_id for r in _records(zone)} == ids - {target.record_id}:
                return candidate
        raise FailedPreconditionError(
            "RECORD_NOT_REMOVABLE",
            f"{target.domain_name} {target.type} {target.data} is not on a line of its own in "
            f"{path}: edit the file by hand (it is reloaded when it changes)",
        )

    async def _replace(self, path: Path, old_text: str, new_text: str) -> None:
        """Write atomically, reload; put the old file back when the reload refuses."""
        try:
            await asyncio.to_thread(self._write, path, old_text, new_text)
        except OSError as exc:  # a read-only mount (a ConfigMap), permissions, a full disk
            raise FailedPreconditionError(
                "ZONE_FILE_NOT_WRITABLE", f"{path} cannot be rewritten: {exc.strerror}"
            ) from exc
        if await self._reloader.reload():
            return
        await asyncio.to_thread(self._write, path, new_text, old_text)
        await self._reloader.reload()
        raise InvalidArgumentError(
            "INVALID_RECORD", "the zones did not validate with this change (see the dns log)"
        )

    @staticmethod
    def _write(path: Path, expected: str, text: str) -> None:
        current = path.read_text()
        if _digest(current) != _digest(expected):
            raise AbortedError(
                "ZONE_FILE_CHANGED", f"{path} changed while the edit was made: try again"
            )
        mode = path.stat().st_mode & 0o7777
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with open(fd, "wb") as file:
            file.write(text.encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
