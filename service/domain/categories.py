"""Usage categories: a rate key seen as (usage type, direction, number type), and filters over them."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.pricing import RateKey
from service.domain.usage import Direction, NumberType, UsageType


@dataclass(frozen=True)
class Category:
    usage_type: UsageType
    direction: Direction | None = None
    number_type: NumberType | None = None

    def matches(self, other: Category) -> bool:
        """Whether `other` (a concrete category) is covered by this one; None matches any value."""
        return (
            self.usage_type == other.usage_type
            and (self.direction is None or self.direction == other.direction)
            and (self.number_type is None or self.number_type == other.number_type)
        )


CATEGORY_OF_RATE_KEY: dict[RateKey, Category] = {
    RateKey.EMAIL: Category(UsageType.EMAIL),
    RateKey.CALL_OUTBOUND_LOCAL: Category(UsageType.CALL, Direction.OUTBOUND, NumberType.LOCAL),
    RateKey.CALL_OUTBOUND_TOLL_FREE: Category(UsageType.CALL, Direction.OUTBOUND, NumberType.TOLL_FREE),
    RateKey.CALL_INBOUND_LOCAL: Category(UsageType.CALL, Direction.INBOUND, NumberType.LOCAL),
    RateKey.CALL_INBOUND_TOLL_FREE: Category(UsageType.CALL, Direction.INBOUND, NumberType.TOLL_FREE),
    RateKey.SMS_OUTBOUND: Category(UsageType.SMS, Direction.OUTBOUND),
    RateKey.SMS_INBOUND: Category(UsageType.SMS, Direction.INBOUND),
}

UNIT_OF_USAGE_TYPE = {UsageType.EMAIL: "email", UsageType.CALL: "minute", UsageType.SMS: "segment"}


def rate_keys_matching(filters: list[Category]) -> list[RateKey]:
    """The rate keys any of the filters covers, in RateKey order; every key when there is no filter."""
    if not filters:
        return list(RateKey)
    return [
        key for key, category in CATEGORY_OF_RATE_KEY.items() if any(f.matches(category) for f in filters)
    ]
