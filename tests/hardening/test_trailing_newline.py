"""A key or company id ending in a newline is refused: the patterns match the whole value, so "k\n"
and "k" can never debit twice."""

from __future__ import annotations

import grpc
import pytest
from consofta.billing.v1 import usage_pb2, usage_service_pb2

from tests.conftest import Stubs


@pytest.mark.parametrize(("field", "value"), [("idempotency_key", "k\n"), ("company_id", "acme\n")])
async def test_a_trailing_newline_is_invalid_argument(stubs: Stubs, field: str, value: str) -> None:
    company = await stubs.new_company()
    request = usage_service_pb2.RecordUsageRequest(
        company_id=company, idempotency_key="k", usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))
    )
    setattr(request, field, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.usage.RecordUsage(request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
