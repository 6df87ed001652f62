"""Usage records and prices on the wire."""

from __future__ import annotations

from consofta.billing.v1 import usage_pb2

from service.api.wire.money import set_money
from service.api.wire.timestamps import set_timestamp
from service.api.wire.usage import set_usage, sms_encoding
from service.domain.ledger import UsageRecord
from service.domain.sms_segments import SmsEncoding

# Written into the message being built (the RecordUsage response's own fields): assigning a new
# nested message to a field copies it, and the response holds seven of them.


def set_price(
    target: usage_pb2.Price,
    billable_units: int,
    unit_price_nanos: int,
    amount_nanos: int,
    rate_card: str,
    rate_card_version: int,
    encoding: SmsEncoding | None,
) -> None:
    target.billable_units = billable_units
    set_money(target.unit_price, unit_price_nanos)
    set_money(target.amount, amount_nanos)
    target.rate_card = rate_card
    target.rate_card_version = rate_card_version
    target.sms_encoding = sms_encoding(encoding)  # type: ignore[assignment]


def set_usage_record(target: usage_pb2.UsageRecord, record: UsageRecord) -> None:
    target.id = str(record.usage_record_id)
    target.company_id = record.company_id
    target.idempotency_key = record.idempotency_key
    set_usage(target.usage, record.usage)
    set_price(
        target.price,
        record.billable_units,
        record.unit_price_nanos,
        record.amount_nanos,
        record.rate_card,
        record.rate_card_version,
        record.sms_encoding,
    )
    set_timestamp(target.occurred_at, record.occurred_at)
    set_timestamp(target.recorded_at, record.recorded_at)
    target.ledger_sequence = record.ledger_sequence


def usage_record_message(record: UsageRecord) -> usage_pb2.UsageRecord:
    built = usage_pb2.UsageRecord()
    set_usage_record(built, record)
    return built
