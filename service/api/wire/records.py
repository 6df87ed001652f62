"""Usage records and prices on the wire."""

from __future__ import annotations

from consofta.billing.v1 import usage_pb2

from service.api.wire.money import money
from service.api.wire.timestamps import timestamp
from service.api.wire.usage import sms_encoding, usage_message
from service.domain.ledger import UsageRecord
from service.domain.sms_segments import SmsEncoding


def price_message(
    billable_units: int,
    unit_price_nanos: int,
    amount_nanos: int,
    rate_card: str,
    rate_card_version: int,
    encoding: SmsEncoding | None,
) -> usage_pb2.Price:
    return usage_pb2.Price(
        billable_units=billable_units,
        unit_price=money(unit_price_nanos),
        amount=money(amount_nanos),
        rate_card=rate_card,
        rate_card_version=rate_card_version,
        sms_encoding=sms_encoding(encoding),  # type: ignore[arg-type]
    )


def usage_record_message(record: UsageRecord) -> usage_pb2.UsageRecord:
    return usage_pb2.UsageRecord(
        id=str(record.usage_record_id),
        company_id=record.company_id,
        idempotency_key=record.idempotency_key,
        usage=usage_message(record.usage),
        price=price_message(
            record.billable_units,
            record.unit_price_nanos,
            record.amount_nanos,
            record.rate_card,
            record.rate_card_version,
            record.sms_encoding,
        ),
        occurred_at=timestamp(record.occurred_at),
        recorded_at=timestamp(record.recorded_at),
        ledger_sequence=record.ledger_sequence,
    )
