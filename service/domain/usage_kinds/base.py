"""What a usage kind declares, and what every kind shares: directions, number types, rate keys.

A kind is one module in this package (email.py, call.py, sms.py) holding its dataclass and a `UsageKind`
subclass that says how the usage is rated, metered, checked and fingerprinted. Everything else (the wire
conversion, validation of enums, reporting categories, the stored form) is derived from what the kind
declares, so adding a kind touches its own module and the registry tuple in `__init__.py`.

A kind's *dimensions* are the fields that choose its price (a call's direction and number type). Its rate
keys are the kind's name joined with every combination of dimension values, in declaration order:
`call_inbound_toll_free`. The stored form of a usage is its rate key plus one quantity, so a stored
record reads back into the same dataclass without per-kind code.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from service.domain.errors import FieldViolation
from service.domain.sms_segments import SmsEncoding

# A price on a rate card, e.g. "call_inbound_toll_free". Stored in the database: never rename one.
RateKey = str

U = TypeVar("U")


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class NumberType(StrEnum):
    LOCAL = "local"
    TOLL_FREE = "toll_free"


@dataclass(frozen=True)
class Metering:
    """How much of a usage is billable, before any price is known."""

    rate_key: RateKey
    billable_units: int
    # What was used, as stored on the record: emails, call seconds, SMS segments.
    quantity: int
    sms_encoding: SmsEncoding | None = None


@dataclass(frozen=True)
class Category:
    """A kind and some of its dimension values; a value of None matches every value (filters)."""

    kind: str
    values: tuple[tuple[str, StrEnum | None], ...] = ()

    def value(self, dimension: str) -> StrEnum | None:
        return dict(self.values).get(dimension)

    def matches(self, other: Category) -> bool:
        """Whether `other` (a concrete category) is covered by this one."""
        return self.kind == other.kind and all(
            wanted is None or other.value(name) == wanted for name, wanted in self.values
        )


def bounded(field: str, value: int, low: int, high: int, what: str) -> list[FieldViolation]:
    """The violation of an integer outside [low, high], in the plural unit `what` ("seconds")."""
    if value < low:
        return [FieldViolation(field, f"must be at least {counted(low, what)}, got {value:,}")]
    if value > high:
        return [FieldViolation(field, f"must be at most {counted(high, what)} in one record, got {value:,}")]
    return []


def counted(number: int, plural: str) -> str:
    """ "1 email", "0 seconds", "1,000 emails": the unit singular for exactly one."""
    unit = plural.removesuffix("s") if abs(number) == 1 else plural
    return f"{number:,} {unit}"


# A kind's rate keys and the dimension values each stands for (from_stored's cache), by kind name.
_STORED_FIELDS: dict[str, dict[RateKey, dict[str, Any]]] = {}


class UsageKind(Generic[U]):
    """One kind of usage. Subclasses set the class attributes and implement meter, violations and
    fingerprint; the rest follows from the dataclass's fields."""

    # The kind's name: the field of the Usage message, the stored usage_type, USAGE_TYPE_<NAME>.
    name: ClassVar[str]
    usage_class: type[U]
    # The billable unit, singular ("minute"), as GetRateCard shows it.
    unit: ClassVar[str]
    # How messages name the kind's usages ("calls").
    plural: ClassVar[str]
    # The fields that choose the price, in rate-key order.
    dimensions: ClassVar[tuple[str, ...]] = ()
    # The field that holds what was used, as stored (a call's duration_seconds).
    quantity_field: ClassVar[str]
    # How much quantity one billable unit covers at most (60 seconds in a call's started minute).
    quantity_per_unit: ClassVar[int] = 1
    # The seed's price per billable unit for each rate key, in nano-USD.
    default_rates_nanos: ClassVar[Mapping[RateKey, int]]

    def meter(self, usage: U) -> Metering:
        raise NotImplementedError

    def violations(self, usage: U, field: str) -> list[FieldViolation]:
        """What is wrong with a usage built from a request, naming fields under `field`."""
        raise NotImplementedError

    def fingerprint(self, usage: U) -> tuple[object, ...]:
        """The parts of the usage that make two requests the same request."""
        raise NotImplementedError

    # --- derived from the declaration -----------------------------------------------------------------

    def field_types(self) -> dict[str, Any]:
        hints = typing.get_type_hints(self.usage_class)
        return {f.name: hints[f.name] for f in fields(self.usage_class)}  # type: ignore[arg-type]

    def dimension_enum(self, dimension: str) -> type[StrEnum]:
        kind = self.field_types()[dimension]
        assert isinstance(kind, type) and issubclass(kind, StrEnum), f"{self.name}.{dimension}"
        return kind

    def rate_key(self, usage: U) -> RateKey:
        values = (str(getattr(usage, d)) for d in self.dimensions)
        return "_".join((self.name, *values))

    def categories(self) -> dict[RateKey, Category]:
        """Every rate key of the kind and the category it stands for, in rate-key order."""
        choices = [[(d, v) for v in self.dimension_enum(d)] for d in self.dimensions]
        return {
            "_".join((self.name, *(str(v) for _, v in combo))): Category(self.name, tuple(combo))
            for combo in itertools.product(*choices)
        }

    def from_stored(self, rate_key: RateKey, quantity: int) -> U:
        """The usage a stored record describes (an SMS body is not stored: it reads back as segments)."""
        # Every record a RecordUsage answers with reads back through here: the fields of each rate key
        # are worked out once per kind.
        stored = _STORED_FIELDS.get(self.name)
        if stored is None:
            stored = {key: dict(category.values) for key, category in self.categories().items()}
            _STORED_FIELDS[self.name] = stored
        return self.usage_class(**stored[rate_key], **{self.quantity_field: quantity})
