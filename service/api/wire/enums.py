"""One table per protobuf enum, pairing its values with domain values by the buf naming convention.

buf's style prefixes every value with the enum's name: value `CALL_DIRECTION_INBOUND` of enum
`CallDirection` is the domain value "inbound". A table is built once, at import, from the descriptor; a
domain value without a wire value fails then, not on some request later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from google.protobuf.descriptor import EnumDescriptor

T = TypeVar("T", bound=str)


def value_prefix(enum: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


class EnumTable(Generic[T]):
    def __init__(self, enum: EnumDescriptor, values: Iterable[T], *, also: Mapping[str, T] | None = None):
        """`values` are paired by name; `also` maps further wire names (that break the convention, or
        alias a value) to domain values, for reading only."""
        self.enum = enum
        prefix = value_prefix(enum)
        self._wire: dict[T, int] = {}
        self._domain: dict[int, T] = {}
        for value in values:
            wire = enum.values_by_name.get(prefix + value.upper())
            if wire is None:
                raise LookupError(f"{enum.full_name} has no value {prefix + value.upper()}")
            self._wire[value] = wire.number
            self._domain[wire.number] = value
        for name, value in (also or {}).items():
            self._domain[enum.values_by_name[name].number] = value
            self._wire.setdefault(value, enum.values_by_name[name].number)

    def domain(self, number: int) -> T | None:
        """The domain value of a wire value; None for UNSPECIFIED and for numbers this code does not know."""
        return self._domain.get(number)

    def wire(self, value: T) -> int:
        return self._wire[value]

    def any_value(self) -> T:
        """Some domain value: a stand-in where one is needed but the request gave none."""
        return next(iter(self._wire))

    def choices(self) -> str:
        """The wire names a request may use, for messages: "A, B or C"."""
        names = [self.enum.values_by_number[n].name for n in sorted(set(self._wire.values()))]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
