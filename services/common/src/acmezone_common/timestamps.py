"""`google.protobuf.Timestamp` from the datetimes the services store, written once.

Every `*_time` field of every API goes through here, so an unset time is always an absent field
(never the 1970 epoch) and times kept as ISO 8601 text in JSON columns convert like datetimes.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """The Timestamp for an aware datetime."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def optional_timestamp(value: datetime | str | None) -> timestamp_pb2.Timestamp | None:
    """The Timestamp for a datetime or ISO 8601 text; None (the field left unset) for None."""
    if value is None:
        return None
    return timestamp(datetime.fromisoformat(value) if isinstance(value, str) else value)
