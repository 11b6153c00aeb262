"""The registry's gRPC front end: proto <-> domain translation and nothing else.

Each servicer method reads the request and the call metadata, builds a `Caller`, calls one use
case of `Registrations` (or the record feed), and turns the result into the response message.
Every rule about who may do what, and every check on values, lives in the domain; failures are
raised as `acmezone_common.errors` exceptions, which the shared server interceptor turns into
statuses with ErrorInfo and BadRequest details. Nothing here calls `context.abort`.

What this module does check is what only the wire format knows about: resource names
(`registrations/{subdomain}`, `registrations/{subdomain}/txtRecord`), update masks, and the
feed's start revision.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import empty_pb2
from typing_extensions import override

from acmezone.registry.v1 import (
    record_feed_service_pb2,
    record_feed_service_pb2_grpc,
    registration_service_pb2,
    registration_service_pb2_grpc,
    txt_record_service_pb2,
    txt_record_service_pb2_grpc,
)
from acmezone_common.errors import InvalidArgumentError, UnavailableError
from acmezone_common.names import resource_ids
from acmezone_common.timestamps import timestamp
from acmezone_registry import errors, model, validation
from acmezone_registry.access import Caller, ClientAddressResolver, IPAddress, parse_address
from acmezone_registry.registrations import Registrations
from acmezone_registry.replicas import ReplicaReport, ReplicaTracker

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

_COLLECTION = "registrations"
_TXT_RECORD = "txtRecord"
# UpdateRegistrationRequest.update_mask paths and the RegistrationChanges field each one sets.
UPDATABLE_FIELDS = ("allowed_cidrs", "description", "max_txt_values")
DEFAULT_REPLICA_WAIT_SECONDS = 10.0
_T = TypeVar("_T")
MAX_REPLICA_WAIT_SECONDS = 300.0


class RecordFeedSource(Protocol):
    """What the feed servicer needs from the record feed (`acmezone_registry.feed.RecordFeed`)."""

    async def status(self) -> model.FeedStatus:
        """The feed's identity and revision bounds."""

    def watch(self, start_revision: int, feed_id: str) -> AsyncIterator[model.WatchEvent]:
        """Snapshot parts (from 0) or changes (from a revision), then live changes and bookmarks."""

    @property
    def replicas(self) -> ReplicaTracker:
        """The dns replicas' reports."""

    async def wait_for_replicas(self, revision: int, within: float) -> list[ReplicaReport]:
        """Once every live replica serves `revision`."""


# -- call metadata --------------------------------------------------------------------------


def peer_address(peer: str) -> IPAddress | None:
    """The IP address in a grpc peer string (`ipv4:127.0.0.1:1234`, `ipv6:[::1]:1234`, the
    percent-encoded `ipv6:%5B::1%5D:1234`); None for `unix:` peers and anything else."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return parse_address(host)


def caller_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]], peer: str, resolver: ClientAddressResolver
) -> Caller:
    """The `Caller` a request's metadata and peer describe (see the proto file header)."""
    operator_token: str | None = None
    username: str | None = None
    password: str | None = None
    forwarded_for: list[str] = []
    for key, value in metadata:
        if not isinstance(value, str):
            continue  # `-bin` metadata carries nothing we read
        name = key.lower()
        if name == "authorization":
            scheme, _, credentials = value.strip().partition(" ")
            # Any other scheme counts as presenting no operator token at all.
            operator_token = credentials.strip() if scheme.lower() == "bearer" else ""
        elif name == "x-api-user":
            username = value.strip()
        elif name == "x-api-key":
            password = value.strip()
        elif name == "x-forwarded-for":
            forwarded_for.append(value)
    return Caller(
        address=resolver.resolve(peer_address(peer), forwarded_for),
        operator_token=operator_token,
        username=username,
        password=password,
    )


def _caller(context: Context, resolver: ClientAddressResolver) -> Caller:
    return caller_from_metadata(context.invocation_metadata() or (), context.peer(), resolver)


# -- resource names -------------------------------------------------------------------------


def registration_subdomain(name: str, *, field: str = "name") -> str:
    """The subdomain in `registrations/{subdomain}`; INVALID_NAME for anything else."""
    (subdomain,) = resource_ids(
        name, f"{_COLLECTION}/{{subdomain}}", field=field, id_of=validation.label_id
    )
    return subdomain


def txt_record_subdomain(name: str, *, field: str = "name") -> str:
    """The subdomain in `registrations/{subdomain}/txtRecord`; INVALID_NAME for anything else."""
    (subdomain,) = resource_ids(
        name, f"{_COLLECTION}/{{subdomain}}/{_TXT_RECORD}", field=field, id_of=validation.label_id
    )
    return subdomain


# -- domain -> proto ------------------------------------------------------------------------


def registration_to_proto(
    registration: model.Registration, password: str = ""
) -> registration_service_pb2.Registration:
    """The wire form of a registration; `password` only for create and rotate responses."""
    return registration_service_pb2.Registration(
        name=f"{_COLLECTION}/{registration.subdomain}",
        username=registration.username,
        password=password,
        subdomain=registration.subdomain,
        fulldomain=registration.fulldomain,
        allowed_cidrs=list(registration.allowed_cidrs),
        description=registration.description,
        max_txt_values=registration.max_txt_values,
        create_time=timestamp(registration.create_time),
        update_time=timestamp(registration.update_time),
    )


def txt_record_to_proto(record: model.TxtRecord) -> txt_record_service_pb2.TxtRecord:
    """The wire form of a registration's TXT values."""
    values = []
    for value in record.values:
        message = txt_record_service_pb2.TxtValue(
            value=value.value,
            create_time=timestamp(value.create_time),
            persistent=value.persistent,
        )
        if value.expire_time is not None:
            message.expire_time.CopyFrom(timestamp(value.expire_time))
        values.append(message)
    return txt_record_service_pb2.TxtRecord(
        name=f"{_COLLECTION}/{record.subdomain}/{_TXT_RECORD}",
        fqdn=record.fqdn,
        values=values,
        revision=record.revision,
    )


_CHANGE_TYPES = {
    model.ChangeType.PUT: record_feed_service_pb2.CHANGE_TYPE_PUT,
    model.ChangeType.DELETE: record_feed_service_pb2.CHANGE_TYPE_DELETE,
}


def _record_set_to_proto(record_set: model.RecordSet) -> record_feed_service_pb2.RecordSet:
    return record_feed_service_pb2.RecordSet(
        fqdn=record_set.fqdn,
        type=record_feed_service_pb2.RECORD_TYPE_TXT,
        txt_values=list(record_set.txt_values),
    )


def watch_event_to_proto(event: model.WatchEvent) -> record_feed_service_pb2.WatchRecordsResponse:
    """One feed event as one WatchRecords stream message."""
    if isinstance(event, model.SnapshotPart):
        response = record_feed_service_pb2.WatchRecordsResponse(
            snapshot=record_feed_service_pb2.SnapshotBatch(
                revision=event.revision, last=event.last, feed_id=event.feed_id, zone=event.zone
            )
        )
        # add() builds each message in place: half the cost of a list of messages, and a
        # million-name snapshot makes a million of them.
        add = response.snapshot.record_sets.add
        txt = record_feed_service_pb2.RECORD_TYPE_TXT
        for record_set in event.record_sets:
            add(fqdn=record_set.fqdn, type=txt, txt_values=record_set.txt_values)
        return response
    if isinstance(event, model.ChangeBatch):
        return record_feed_service_pb2.WatchRecordsResponse(
            changes=record_feed_service_pb2.ChangeBatch(
                changes=[
                    record_feed_service_pb2.RecordChange(
                        revision=change.revision,
                        type=_CHANGE_TYPES[change.type],
                        record_set=_record_set_to_proto(change.record_set),
                        commit_time=timestamp(change.commit_time),
                    )
                    for change in event.changes
                ]
            )
        )
    return record_feed_service_pb2.WatchRecordsResponse(
        bookmark=record_feed_service_pb2.Bookmark(
            revision=event.revision, time=timestamp(event.time), feed_id=event.feed_id
        )
    )


def registration_changes(
    registration: registration_service_pb2.Registration, paths: Sequence[str]
) -> model.RegistrationChanges:
    """The fields an update mask selects, taken from `registration`; the rest stay None."""
    if not paths:
        raise InvalidArgumentError(
            errors.INVALID_UPDATE_MASK,
            f"update_mask must name at least one of {', '.join(UPDATABLE_FIELDS)}",
            field="update_mask",
        )
    for index, path in enumerate(paths):
        if path not in UPDATABLE_FIELDS:
            raise InvalidArgumentError(
                errors.INVALID_UPDATE_MASK,
                f"{path!r} cannot be updated; the update mask may name "
                f"{', '.join(UPDATABLE_FIELDS)}",
                field=f"update_mask.paths[{index}]",
            )
    return model.RegistrationChanges(
        allowed_cidrs=tuple(registration.allowed_cidrs) if "allowed_cidrs" in paths else None,
        description=registration.description if "description" in paths else None,
        max_txt_values=registration.max_txt_values if "max_txt_values" in paths else None,
    )


# -- servicers ------------------------------------------------------------------------------


class RegistrationServicer(registration_service_pb2_grpc.RegistrationServiceServicer):
    """acmezone.registry.v1.RegistrationService over `Registrations`."""

    def __init__(self, registrations: Registrations, resolver: ClientAddressResolver) -> None:
        self._registrations = registrations
        self._resolver = resolver

    @override
    async def CreateRegistration(
        self, request: registration_service_pb2.CreateRegistrationRequest, context: Context
    ) -> registration_service_pb2.Registration:
        wanted = request.registration
        issued = await self._registrations.create(
            _caller(context, self._resolver),
            allowed_cidrs=tuple(wanted.allowed_cidrs),
            description=wanted.description,
            max_txt_values=wanted.max_txt_values,
            subdomain=request.registration_id or None,
        )
        return registration_to_proto(issued.registration, issued.password)

    @override
    async def GetRegistration(
        self, request: registration_service_pb2.GetRegistrationRequest, context: Context
    ) -> registration_service_pb2.Registration:
        subdomain = registration_subdomain(request.name)
        registration = await self._registrations.get(_caller(context, self._resolver), subdomain)
        return registration_to_proto(registration)

    @override
    async def ListRegistrations(
        self, request: registration_service_pb2.ListRegistrationsRequest, context: Context
    ) -> registration_service_pb2.ListRegistrationsResponse:
        page = await self._registrations.list(
            _caller(context, self._resolver),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return registration_service_pb2.ListRegistrationsResponse(
            registrations=[registration_to_proto(r) for r in page.registrations],
            next_page_token=page.next_page_token,
        )

    @override
    async def UpdateRegistration(
        self, request: registration_service_pb2.UpdateRegistrationRequest, context: Context
    ) -> registration_service_pb2.Registration:
        subdomain = registration_subdomain(request.registration.name, field="registration.name")
        changes = registration_changes(request.registration, list(request.update_mask.paths))
        registration = await self._registrations.update(
            _caller(context, self._resolver), subdomain, changes
        )
        return registration_to_proto(registration)

    @override
    async def DeleteRegistration(
        self, request: registration_service_pb2.DeleteRegistrationRequest, context: Context
    ) -> empty_pb2.Empty:
        subdomain = registration_subdomain(request.name)
        await self._registrations.delete(_caller(context, self._resolver), subdomain)
        return empty_pb2.Empty()

    @override
    async def RotateRegistrationPassword(
        self,
        request: registration_service_pb2.RotateRegistrationPasswordRequest,
        context: Context,
    ) -> registration_service_pb2.Registration:
        subdomain = registration_subdomain(request.name)
        issued = await self._registrations.rotate_password(
            _caller(context, self._resolver), subdomain
        )
        return registration_to_proto(issued.registration, issued.password)


class TxtRecordServicer(txt_record_service_pb2_grpc.TxtRecordServiceServicer):
    """acmezone.registry.v1.TxtRecordService over `Registrations`."""

    def __init__(self, registrations: Registrations, resolver: ClientAddressResolver) -> None:
        self._registrations = registrations
        self._resolver = resolver

    @override
    async def GetTxtRecord(
        self, request: txt_record_service_pb2.GetTxtRecordRequest, context: Context
    ) -> txt_record_service_pb2.TxtRecord:
        subdomain = txt_record_subdomain(request.name)
        record = await self._registrations.get_txt_record(
            _caller(context, self._resolver), subdomain
        )
        return txt_record_to_proto(record)

    @override
    async def AddTxtValue(
        self, request: txt_record_service_pb2.AddTxtValueRequest, context: Context
    ) -> txt_record_service_pb2.TxtRecord:
        subdomain = txt_record_subdomain(request.name)
        record = await self._registrations.add_txt_value(
            _caller(context, self._resolver),
            subdomain,
            request.value,
            persistent=request.persistent,
        )
        return txt_record_to_proto(record)

    @override
    async def RemoveTxtValue(
        self, request: txt_record_service_pb2.RemoveTxtValueRequest, context: Context
    ) -> txt_record_service_pb2.TxtRecord:
        subdomain = txt_record_subdomain(request.name)
        record = await self._registrations.remove_txt_value(
            _caller(context, self._resolver), subdomain, request.value
        )
        return txt_record_to_proto(record)

    @override
    async def ClearTxtValues(
        self, request: txt_record_service_pb2.ClearTxtValuesRequest, context: Context
    ) -> txt_record_service_pb2.TxtRecord:
        subdomain = txt_record_subdomain(request.name)
        record = await self._registrations.clear_txt_values(
            _caller(context, self._resolver), subdomain
        )
        return txt_record_to_proto(record)


class RecordFeedServicer(record_feed_service_pb2_grpc.RecordFeedServiceServicer):
    """acmezone.registry.v1.RecordFeedService over the record feed."""

    def __init__(self, feed: RecordFeedSource) -> None:
        self._feed = feed

    @override
    async def WatchRecords(
        self, request: record_feed_service_pb2.WatchRecordsRequest, context: Context
    ) -> AsyncIterator[record_feed_service_pb2.WatchRecordsResponse]:
        if request.start_revision < 0:
            raise InvalidArgumentError(
                errors.INVALID_START_REVISION,
                f"start_revision must be 0 (snapshot) or a revision to resume from, "
                f"not {request.start_revision}",
                field="start_revision",
            )
        events = self._feed.watch(request.start_revision, request.feed_id)
        try:
            async for event in events:
                yield watch_event_to_proto(event)
        finally:
            # Release the feed's resources (watcher registration, DB listeners) at once when
            # the client goes away instead of whenever the generator is collected.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    @override
    async def GetFeedStatus(
        self, request: record_feed_service_pb2.GetFeedStatusRequest, context: Context
    ) -> record_feed_service_pb2.FeedStatus:
        status = await self._feed.status()
        return record_feed_service_pb2.FeedStatus(
            feed_id=status.feed_id,
            revision=status.revision,
            compacted_revision=status.compacted_revision,
            zone=status.zone,
            replicas=[_replica_to_proto(r) for r in self._feed.replicas.live()],
        )

    @override
    async def ReportServedRevisions(
        self,
        request_iterator: AsyncIterator[record_feed_service_pb2.ReportServedRevisionsRequest],
        context: Context,
    ) -> record_feed_service_pb2.ReportServedRevisionsResponse:
        replicas = self._feed.replicas
        with replicas.stream() as report:
            async for request in _until(request_iterator, replicas.closing):
                report(request.replica, request.feed_id, request.revision)
        return record_feed_service_pb2.ReportServedRevisionsResponse()

    @override
    async def WaitForReplicas(
        self, request: record_feed_service_pb2.WaitForReplicasRequest, context: Context
    ) -> record_feed_service_pb2.WaitForReplicasResponse:
        if request.revision < 1:
            raise InvalidArgumentError(
                errors.INVALID_REVISION, "revision must be 1 or more", field="revision"
            )
        timeout = request.timeout.ToTimedelta().total_seconds()
        if timeout < 0 or timeout > MAX_REPLICA_WAIT_SECONDS:
            raise InvalidArgumentError(
                errors.INVALID_TIMEOUT,
                f"timeout must be 0 (the default, {DEFAULT_REPLICA_WAIT_SECONDS:g} s) to "
                f"{MAX_REPLICA_WAIT_SECONDS:g} s",
                field="timeout",
            )
        replicas = await self._feed.wait_for_replicas(
            request.revision, timeout or DEFAULT_REPLICA_WAIT_SECONDS
        )
        return record_feed_service_pb2.WaitForReplicasResponse(
            replicas=[_replica_to_proto(r) for r in replicas]
        )


async def _until(requests: AsyncIterator[_T], closing: asyncio.Event) -> AsyncIterator[_T]:
    """The requests of a client stream until the client ends it or `closing` is set (then
    UNAVAILABLE, SHUTTING_DOWN: the client reconnects elsewhere)."""
    reading = aiter(requests)
    stop = asyncio.ensure_future(closing.wait())
    step: asyncio.Future[_T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(reading))
            await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                raise UnavailableError(errors.SHUTTING_DOWN, "this registry replica is stopping")
            try:
                request = step.result()
            except StopAsyncIteration:
                return
            yield request
    finally:
        stop.cancel()
        if step is not None:
            if step.done():
                step.cancelled() or step.exception()  # retrieved: no "never retrieved" noise
            else:
                step.cancel()


def _replica_to_proto(report: ReplicaReport) -> record_feed_service_pb2.ReplicaStatus:
    return record_feed_service_pb2.ReplicaStatus(
        replica=report.replica,
        revision=report.revision,
        report_time=timestamp(report.report_time),
        connected=report.connected,
    )
