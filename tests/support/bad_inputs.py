"""A catalogue of bad values for every field of every RPC, found through the descriptors.

For each method it builds a base request (an existing company, fresh request keys, a small valid usage
and amount) and then one case per (field, bad value): the base with that one field made bad, as the raw
bytes a hostile caller would send, so invalid UTF-8 and out-of-range varints get through too. A new RPC,
field or message is covered without editing this file.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import SimpleNamespace

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

_F = FieldDescriptor
_INT_TYPES = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
_IDENTIFIER_SUFFIXES = ("_id", "_key", "token", "cursor", "currency_code", "time_zone")
_MAX_DEPTH = 4
LARGE_CHARS = (10_000, 1_000_000)


@dataclass(frozen=True)
class Case:
    method: str  # /package.Service/Method
    field: str  # dotted path, as the BadRequest would name it ("" for the whole message)
    label: str  # what is bad, for the failure message
    raw: bytes
    # The value is wrong whatever the rest of the request says, so a refusal must name this field.
    field_fault: bool
    server_streaming: bool


def methods(service_names: tuple[str, ...]) -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [m for name in service_names for m in pool.FindServiceByName(name).methods]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested(path: list[FieldDescriptor], leaf: bytes) -> bytes:
    """`leaf` (the encoded last field) wrapped in the encodings of the messages along `path[:-1]`."""
    raw = leaf
    for outer in reversed(path[:-1]):
        raw = _length_delimited(outer.number, raw)
    return raw


GoodValues = Callable[[Message], None]


def _fields(descriptor: Descriptor, depth: int = 0) -> Iterator[list[FieldDescriptor]]:
    for field in descriptor.fields:
        yield [field]
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.type == _F.TYPE_MESSAGE and depth < _MAX_DEPTH and not is_map:
            for rest in _fields(field.message_type, depth + 1):
                yield [field, *rest]


def _dotted(path: list[FieldDescriptor]) -> str:
    return ".".join(f.name for f in path)


def _target(message: Message, path: list[FieldDescriptor]) -> Message | None:
    """The message holding the last field of `path`, created along the way (None inside a repeated)."""
    for field in path[:-1]:
        if field.is_repeated:
            return None
        message = getattr(message, field.name)
    return message


def _with(
    base: Message, path: list[FieldDescriptor], setter: Callable[[Message, FieldDescriptor], None]
) -> bytes | None:
    copy = type(base)()
    copy.CopyFrom(base)
    holder = _target(copy, path)
    if holder is None:
        return None
    setter(holder, path[-1])
    return copy.SerializeToString()


def _strings(name: str) -> Iterator[tuple[str, str | bytes, bool]]:
    """(label, value, field_fault) for a string field called `name`."""
    identifier = name.endswith(_IDENTIFIER_SUFFIXES)
    yield "empty", "", False
    yield "whitespace", "   ", identifier
    yield "padded", " k ", identifier
    yield "trailing newline", "k\n", identifier
    yield "NUL", "a\x00b", identifier
    yield "C1 control U+0085", "a\u0085b", identifier
    yield "bidi override U+202E", "a\u202eb", identifier
    yield "path", "../../etc/passwd", False
    for size in LARGE_CHARS:
        yield f"{size:,} chars", "x" * size, True
    yield "invalid UTF-8", b"\xff\xfe\xc3(", True
    if name.endswith(("token", "cursor")):
        yield "forged base64", "AAAA", True
        yield "forged JSON token", base64.urlsafe_b64encode(b'[1,"0000",99999999999999999999]').decode(), True
        yield "forged cursor", base64.urlsafe_b64encode(b"c1:99999999999999999999999:x").decode(), True


def _numbers(field: FieldDescriptor) -> Iterator[tuple[str, int]]:
    low, high = _INT_TYPES[field.type]
    for value in (-1, 0, 10**9, low, high):
        if low <= value <= high:
            yield str(value), value


_MONEY_CASES: list[tuple[str, str, int, int]] = [
    ("lowercase currency", "usd", 1, 0),
    ("no currency", "", 1, 0),
    ("other currency", "EUR", 1, 0),
    ("10 KB currency", "U" * 10_000, 1, 0),
    ("nanos out of range", "USD", 0, 1_000_000_000),
    ("nanos sign mismatch", "USD", 1, -1),
    ("units sign mismatch", "USD", -1, 1),
    ("units at int64 max", "USD", 2**63 - 1, 999_999_999),
    ("units at int64 min", "USD", -(2**63), -999_999_999),
]
_TIMESTAMP_CASES: list[tuple[str, int, int]] = [
    ("year 1", -62_135_596_800, 0),
    ("year 9999", 253_402_300_799, 999_999_999),
    ("beyond year 9999", 10**12, 0),
    ("negative nanos", 0, -1),
    ("nanos out of range", 0, 1_000_000_000),
]
_DURATION_CASES: list[tuple[str, int, int]] = [
    ("negative", -1, 0),
    ("ten thousand years", 315_576_000_000, 0),
    ("beyond range", 10**15, 0),
    ("sign mismatch", 1, -1),
]


def cases(method: MethodDescriptor, base: Message) -> Iterator[Case]:
    """Every bad-input case of `method`, from the valid `base` request."""
    name = path_of(method)
    streaming = method.server_streaming
    raw_base = base.SerializeToString()

    def case(field: str, label: str, raw: bytes | None, field_fault: bool) -> Iterator[Case]:
        if raw is not None:
            yield Case(name, field, label, raw, field_fault, streaming)

    # The whole message.
    if raw_base:
        yield from case("", "truncated", raw_base[:-1], False)
    yield from case("", "random bytes", bytes(range(255, 0, -7)), False)
    yield from case("", "unknown field", raw_base + _length_delimited(999, b"x"), False)

    for path in _fields(method.input_type):
        field, dotted = path[-1], _dotted(path)
        deepest_ok = all(not f.is_repeated for f in path[:-1])
        if not deepest_ok:
            continue
        repeated = field.is_repeated
        if field.type == _F.TYPE_STRING:
            for label, value, fault in _strings(field.name):
                if len(path) > 2 and isinstance(value, str) and len(value) > LARGE_CHARS[0]:
                    continue  # a megabyte per nested field adds time, not coverage
                if isinstance(value, bytes):
                    leaf = _length_delimited(field.number, value)
                    yield from case(dotted, label, raw_base + _nested(path, leaf), fault)
                    continue

                def set_string(holder: Message, f: FieldDescriptor, value: str = value) -> None:
                    if f.is_repeated:
                        getattr(holder, f.name).append(value)
                    else:
                        setattr(holder, f.name, value)

                yield from case(dotted, label, _with(base, path, set_string), fault)
        elif field.type in _INT_TYPES:
            for label, number in _numbers(field):

                def set_int(holder: Message, f: FieldDescriptor, number: int = number) -> None:
                    if f.is_repeated:
                        getattr(holder, f.name).append(number)
                    else:
                        setattr(holder, f.name, number)

                yield from case(dotted, label, _with(base, path, set_int), False)
            if field.type in (_F.TYPE_INT32, _F.TYPE_UINT32) and not repeated:
                # A 64-bit varint in a 32-bit field: valid on the wire, truncated by the decoder.
                leaf = _varint(field.number << 3) + _varint(2**40 + 5)
                yield from case(dotted, "overflowing varint", raw_base + _nested(path, leaf), False)
        elif field.type == _F.TYPE_ENUM:
            for label, number in (("unknown enum value", 999), ("negative enum value", -1)):

                def set_enum(holder: Message, f: FieldDescriptor, number: int = number) -> None:
                    if f.is_repeated:
                        getattr(holder, f.name).append(number)
                    else:
                        setattr(holder, f.name, number)

                yield from case(dotted, label, _with(base, path, set_enum), False)
        elif field.type == _F.TYPE_MESSAGE and not repeated:
            full = field.message_type.full_name
            if full == "google.type.Money":
                for label, currency, units, nanos in _MONEY_CASES:

                    def set_money(holder: Message, f: FieldDescriptor, c=currency, u=units, n=nanos) -> None:
                        target = getattr(holder, f.name)
                        target.currency_code, target.units, target.nanos = c, u, n

                    yield from case(dotted, label, _with(base, path, set_money), label == "10 KB currency")
            elif full == "google.protobuf.Timestamp":
                for label, seconds, nanos in _TIMESTAMP_CASES:

                    def set_time(holder: Message, f: FieldDescriptor, s=seconds, n=nanos) -> None:
                        target = getattr(holder, f.name)
                        target.seconds, target.nanos = s, n

                    yield from case(dotted, label, _with(base, path, set_time), False)
            elif full == "google.protobuf.Duration":
                for label, seconds, nanos in _DURATION_CASES:

                    def set_duration(holder: Message, f: FieldDescriptor, s=seconds, n=nanos) -> None:
                        target = getattr(holder, f.name)
                        target.seconds, target.nanos = s, n

                    yield from case(dotted, label, _with(base, path, set_duration), False)
            elif full == "google.protobuf.FieldMask":
                for label, paths in (
                    ("empty path", [""]),
                    ("path with newline", ["minimum_balance\n"]),
                    ("10 KB path", ["p" * 10_000]),
                    ("nested path", ["settings.minimum_balance"]),
                    ("many paths", [f"p{i}" for i in range(2_000)]),
                ):

                    def set_mask(holder: Message, f: FieldDescriptor, p=paths) -> None:
                        getattr(holder, f.name).paths.extend(p)

                    yield from case(dotted, label, _with(base, path, set_mask), label == "10 KB path")


def message_class(descriptor: Descriptor) -> type[Message]:
    return GetMessageClass(descriptor)


def element_cases(method: MethodDescriptor, field: FieldDescriptor, element: Message) -> Iterator[Case]:
    """The cases of one element of a repeated message field (a batch's `items`), each sent as a request
    of `method` whose only element is the bad one: `element` is a valid element to start from."""
    as_item = SimpleNamespace(
        containing_service=method.containing_service,
        name=method.name,
        server_streaming=method.server_streaming,
        input_type=field.message_type,
    )
    for case in cases(as_item, element):  # type: ignore[arg-type]
        yield replace(
            case,
            field=f"{field.name}[0]" + (f".{case.field}" if case.field else ""),
            raw=_length_delimited(field.number, case.raw),
        )
