"""Usage and usage categories on the wire, for every registered kind.

A kind's message is the field of `Usage` named after the kind; its fields have the names of the kind's
dataclass fields. A dimension of a kind is the `UsageCategory` field `<kind>_<dimension>`, or plain
`<dimension>` when that is the one the contract has (calls' `number_type`). Enum fields pair by the buf
convention (enums.py). So a new kind is read, echoed and filtered with no change here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from consofta.billing.v1 import usage_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from service.api.validation import Violations
from service.api.wire.enums import EnumTable
from service.domain.sms_segments import SmsEncoding
from service.domain.usage_kinds import (
    CATEGORY_OF_RATE_KEY,
    KINDS,
    Category,
    RateKey,
    Usage,
    UsageKind,
    kind_of,
)

USAGE_TYPES: EnumTable[str] = EnumTable(usage_pb2.UsageType.DESCRIPTOR, [k.name for k in KINDS])
SMS_ENCODINGS: EnumTable[SmsEncoding] = EnumTable(usage_pb2.SmsEncoding.DESCRIPTOR, list(SmsEncoding))
_CATEGORY_FIELDS = usage_pb2.UsageCategory.DESCRIPTOR.fields_by_name


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass(frozen=True)
class _Field:
    name: str
    enum: EnumTable[Any] | None
    has_presence: bool


class _KindCodec:
    """One kind's message <-> dataclass, built from the kind's declaration and the descriptors."""

    def __init__(self, kind: UsageKind[Any]) -> None:
        self.kind = kind
        descriptor = usage_pb2.Usage.DESCRIPTOR.fields_by_name[kind.name].message_type
        assert descriptor is not None, kind.name
        self.message_class: type[Message] = type(getattr(usage_pb2.Usage(), kind.name))
        self.fields: list[_Field] = []
        for name, python_type in kind.field_types().items():
            proto = descriptor.fields_by_name[name]
            enum = None
            if isinstance(python_type, type) and issubclass(python_type, StrEnum):
                assert proto.enum_type is not None, name
                enum = EnumTable(proto.enum_type, list(python_type))
            self.fields.append(_Field(name, enum, proto.has_presence))
        # The category fields of each dimension: (dimension, UsageCategory field, its enum table).
        self.category_fields: list[tuple[str, str, EnumTable[Any]]] = []
        for dimension in kind.dimensions:
            field = (
                f"{kind.name}_{dimension}" if f"{kind.name}_{dimension}" in _CATEGORY_FIELDS else dimension
            )
            proto = _CATEGORY_FIELDS[field]
            assert proto.type == FieldDescriptor.TYPE_ENUM and proto.enum_type is not None, field
            self.category_fields.append(
                (dimension, field, EnumTable(proto.enum_type, list(kind.dimension_enum(dimension))))
            )

    def parse(self, v: Violations, message: Any, field: str) -> Any:
        here = f"{field}.{self.kind.name}"
        values: dict[str, Any] = {}
        complete = True
        for f in self.fields:
            if f.enum is not None:
                value = f.enum.domain(getattr(message, f.name))
                if value is None:
                    v.add(f"{here}.{f.name}", f"must be {f.enum.choices()}")
                    complete = False
                    # A placeholder, so that the kind's own checks of the other fields still run.
                    value = f.enum.any_value()
                values[f.name] = value
            elif f.has_presence and not message.HasField(f.name):
                values[f.name] = None
            else:
                values[f.name] = getattr(message, f.name)
        usage = self.kind.usage_class(**values)
        problems = self.kind.violations(usage, here)
        for problem in problems:
            v.add(problem.field, problem.description)
        return usage if complete and not problems else None

    def write(self, usage: Any, target: Message) -> None:
        target.SetInParent()  # a kind whose fields are all at their defaults is still the one set
        for f in self.fields:
            value = getattr(usage, f.name)
            if value is not None:
                setattr(target, f.name, f.enum.wire(value) if f.enum is not None else value)


_CODECS = {kind.name: _KindCodec(kind) for kind in KINDS}
_KIND_NAMES = [kind.name for kind in KINDS]


def parse_usage(v: Violations, usage: usage_pb2.Usage, field: str = "usage") -> Usage | None:
    """The domain usage described by `usage`, or None after adding violations."""
    present = [name for name in _KIND_NAMES if usage.HasField(name)]  # type: ignore[arg-type]
    if len(present) != 1:
        extra = f", not {' and '.join(present)}" if present else ""
        v.add(field, f"must set exactly one of {_or_list(_KIND_NAMES)}{extra}")
        return None
    name = present[0]
    parsed: Usage | None = _CODECS[name].parse(v, getattr(usage, name), field)
    return parsed


def set_usage(target: usage_pb2.Usage, usage: Usage) -> None:
    """Writes `usage` into `target` in place (no message built and copied per kind)."""
    name = kind_of(usage).name
    _CODECS[name].write(usage, getattr(target, name))


def usage_message(usage: Usage) -> usage_pb2.Usage:
    message = usage_pb2.Usage()
    set_usage(message, usage)
    return message


def sms_encoding(encoding: SmsEncoding | None) -> int:
    return usage_pb2.SMS_ENCODING_UNSPECIFIED if encoding is None else SMS_ENCODINGS.wire(encoding)


# --- categories ----------------------------------------------------------------------------------------


def category_message(key: RateKey) -> usage_pb2.UsageCategory:
    category = CATEGORY_OF_RATE_KEY[key]
    message = usage_pb2.UsageCategory(usage_type=USAGE_TYPES.wire(category.kind))  # type: ignore[arg-type]
    for dimension, field, table in _CODECS[category.kind].category_fields:
        value = category.value(dimension)
        if value is not None:
            setattr(message, field, table.wire(value))
    return message


def parse_categories(
    v: Violations, items: Iterable[usage_pb2.UsageCategory], field: str = "categories"
) -> list[Category]:
    parsed: list[Category] = []
    for i, item in enumerate(items):
        here = f"{field}[{i}]"
        kind = USAGE_TYPES.domain(item.usage_type)
        if kind is None:
            v.add(f"{here}.usage_type", f"must be {USAGE_TYPES.choices()}")
            continue
        for other in _CODECS.values():
            if other.kind.name == kind:
                continue
            stray = [f for _, f, _ in other.category_fields if getattr(item, f)]
            if len(other.category_fields) == 1 and stray:
                v.add(f"{here}.{stray[0]}", f"applies to {other.kind.plural} only")
            elif stray:
                names = " and ".join(f for _, f, _ in other.category_fields)
                v.add(here, f"{names} apply to {other.kind.plural} only")
        values: list[tuple[str, Any]] = []
        for dimension, f, table in _CODECS[kind].category_fields:
            raw = getattr(item, f)
            value = table.domain(raw)
            if raw and value is None:
                v.add(f"{here}.{f}", f"is not a known {f.replace('_', ' ')}")
            values.append((dimension, value))
        parsed.append(Category(kind, tuple(values)))
    return parsed
