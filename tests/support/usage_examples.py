"""One usage of each rate key of each kind, with what it must cost at the seed's prices, written out by
hand (never computed from the kind's module, so a wrong seed price or meter fails a test).

The generic tests read this table: metering and pricing (tests/unit/test_usage_kinds.py), RecordUsage,
AuthorizeUsage with its capture, and the blocking client end to end (tests/e2e/test_usage_examples.py),
the units GetRateCard shows (tests/reporting/test_rates_and_quotes.py). A kind, or a rate key, without
an example here fails tests/unit/test_usage_kinds.py naming this file: a new kind adds its rows here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from service.domain.usage_kinds import (
    CallUsage,
    Direction,
    EmailUsage,
    NumberType,
    RateKey,
    SmsUsage,
    Usage,
    kind_of,
)

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
LOCAL, TOLL_FREE = NumberType.LOCAL, NumberType.TOLL_FREE


@dataclass(frozen=True)
class Example:
    usage: Usage
    rate_key: RateKey
    billable_units: int
    # The billable unit, singular, as GetRateCard shows it.
    unit: str
    # billable_units x the seed's unit price of the rate key.
    amount_nanos: int

    @property
    def kind(self) -> str:
        return kind_of(self.usage).name

    def client_fields(self) -> dict[str, Any]:
        """The usage as keyword arguments of the client's `record(company, kind, **fields)`."""
        values = {f.name: getattr(self.usage, f.name) for f in fields(self.usage)}
        return {name: str(v) if isinstance(v, str) else v for name, v in values.items() if v is not None}


EXAMPLES: tuple[Example, ...] = (
    Example(EmailUsage(1000), "email", 1000, "email", 675_000_000),
    Example(CallUsage(OUT, LOCAL, 61), "call_outbound_local", 2, "minute", 28_000_000),
    Example(CallUsage(OUT, TOLL_FREE, 60), "call_outbound_toll_free", 1, "minute", 14_000_000),
    Example(CallUsage(IN, LOCAL, 3600), "call_inbound_local", 60, "minute", 510_000_000),
    Example(CallUsage(IN, TOLL_FREE, 1), "call_inbound_toll_free", 1, "minute", 22_000_000),
    Example(SmsUsage(OUT, body="x" * 161), "sms_outbound", 2, "segment", 15_800_000),
    Example(SmsUsage(IN, segments=3), "sms_inbound", 3, "segment", 23_700_000),
)

UNIT_OF_RATE_KEY: dict[RateKey, str] = {example.rate_key: example.unit for example in EXAMPLES}
