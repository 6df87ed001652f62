"""datetime <-> google.protobuf.Timestamp, always in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def datetime_of(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)
