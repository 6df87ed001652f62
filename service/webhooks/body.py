"""The JSON body of a delivery: the event, with its amounts as google.type.Money objects.

    {"id": "evt_42", "type": "balance_alert", "company_id": "acme", "sequence": 7,
     "created": "2026-12-02T19:40:00.123456Z",
     "data": {"threshold": {"currency_code": "USD", "units": "5", "nanos": 0}, ...}}

`data` is the outbox payload with every `<name>_nanos` amount replaced by `<name>` as Money, in the
proto3 JSON form (`units` a string, as int64 is in proto3 JSON), so a receiver can parse it with any
protobuf library. The bytes are built once per delivery attempt and signed as sent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from service.domain.money import CURRENCY_CODE, NANOS_PER_USD

_NANOS_SUFFIX = "_nanos"


def money_json(amount_nanos: int) -> dict[str, Any]:
    sign = -1 if amount_nanos < 0 else 1
    units, nanos = divmod(abs(amount_nanos), NANOS_PER_USD)
    return {"currency_code": CURRENCY_CODE, "units": str(sign * units), "nanos": sign * nanos}


def typed_payload(value: Any) -> Any:
    if isinstance(value, dict):
        typed: dict[str, Any] = {}
        for key, item in value.items():
            if key.endswith(_NANOS_SUFFIX) and isinstance(item, int) and not isinstance(item, bool):
                typed[key[: -len(_NANOS_SUFFIX)]] = money_json(item)
            else:
                typed[key] = typed_payload(item)
        return typed
    if isinstance(value, list):
        return [typed_payload(item) for item in value]
    return value


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(
    event_id: int, event_type: str, company_id: str, sequence: int, created_at: datetime, payload_json: str
) -> bytes:
    document = {
        "id": f"evt_{event_id}",
        "type": event_type,
        "company_id": company_id,
        "sequence": sequence,
        "created": rfc3339(created_at),
        "data": typed_payload(json.loads(payload_json)),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
