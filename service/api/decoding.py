"""Request bytes that do not decode become INVALID_ARGUMENT naming the field, not UNKNOWN.

gRPC calls a method's deserializer before any handler runs; when it raises (invalid UTF-8 in a string
field, a truncated message, random bytes), gRPC answers UNKNOWN and logs a traceback, with no canonical
line and no metric. The edge swaps in `tolerant()`, which returns an `Undecodable` instead of raising;
the handler wrapper then raises an InvalidArgument inside the RPC's EdgeCall, so the call gets the
canonical line, the metric and a BadRequest like any other bad field.

`locate()` walks the protobuf wire format along the message's descriptor to name the field at fault
(`usage.sms.body`), the way a caller would spell it in a request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from service.domain.errors import FieldViolation, InvalidArgument

REQUEST_FIELD = "request"
_MAX_DEPTH = 32  # protobuf's own recursion limit is 100; our messages nest 4 deep


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What the tolerant deserializer returns for bytes that are not a valid request."""

    field: str
    description: str

    def error(self) -> InvalidArgument:
        return InvalidArgument([FieldViolation(self.field, self.description)])


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning an Undecodable instead of raising."""
    if deserializer is None:
        return None
    descriptor = _descriptor_of(deserializer)

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, or UnicodeDecodeError from the pure-Python runtime
            return locate(raw, descriptor)

    return deserialize


def _descriptor_of(deserializer: Callable[[bytes], Any]) -> Descriptor | None:
    # The generated handlers pass `RequestType.FromString`, a classmethod bound to the message class.
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return descriptor if isinstance(descriptor, Descriptor) else None


class _Malformed(Exception):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(field, description)
        self.field = field
        self.description = description


def locate(raw: bytes, descriptor: Descriptor | None) -> Undecodable:
    """The field at fault in bytes that did not decode as `descriptor`'s message."""
    try:
        _walk(memoryview(raw), descriptor, "", 0)
    except _Malformed as fault:
        return Undecodable(fault.field, fault.description)
    return Undecodable(REQUEST_FIELD, "is not a valid protobuf message")


def _varint(data: memoryview, pos: int, field: str) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _Malformed(field, "is a truncated or malformed protobuf message")


def _walk(data: memoryview, descriptor: Descriptor | None, prefix: str, depth: int) -> None:
    here = prefix.rstrip(".") or REQUEST_FIELD
    if depth > _MAX_DEPTH:
        raise _Malformed(here, "nests too deeply")
    pos = 0
    # Elements of a repeated field seen so far, so that a bad element is named as AIP-193 does
    # (`items[3].company_id`).
    seen: dict[int, int] = {}
    while pos < len(data):
        tag, pos = _varint(data, pos, here)
        number, wire_type = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number) if descriptor is not None else None
        name = prefix + (field.name if field is not None else f"field {number}")
        if field is not None and field.is_repeated and wire_type == 2:
            index = seen.get(number, 0)
            seen[number] = index + 1
            name += f"[{index}]"
        if number == 0:
            raise _Malformed(here, "is not a valid protobuf message (field number 0)")
        if wire_type == 0:
            _, pos = _varint(data, pos, name)
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
            if pos > len(data):
                raise _Malformed(name, "is truncated")
        elif wire_type == 2:
            length, pos = _varint(data, pos, name)
            if pos + length > len(data):
                raise _Malformed(name, "is truncated")
            payload = data[pos : pos + length]
            pos += length
            if field is None:
                continue
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    bytes(payload).decode("utf-8")
                except UnicodeDecodeError:
                    raise _Malformed(name, "is not valid UTF-8") from None
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                _walk(payload, field.message_type, name + ".", depth + 1)
        else:  # groups (3, 4) are not used by proto3; 6 and 7 do not exist
            raise _Malformed(name, "is not a valid protobuf message (unknown wire type)")
