"""A service billing its usage through the client; also what `mypy --strict` checks the client against.

python clients/examples/bill_a_call.py localhost:50051
"""

from __future__ import annotations

import asyncio
import sys

from consofta.billing.client import (
    AsyncBillingClient,
    BillingClient,
    BillingError,
    InvalidArgument,
    NotFound,
    RetryEvent,
    RetryPolicy,
    nanos_of,
    usd_of,
)
from consofta.billing.v1 import usage_pb2, usage_service_pb2


def log_retry(event: RetryEvent) -> None:
    print(f"retrying {event.method} after {event.code.name} in {event.delay_s:.3f}s", file=sys.stderr)


async def bill(target: str) -> None:
    retry = RetryPolicy(max_attempts=3, on_retry=log_retry)
    # A plaintext channel to a development server (auth off on loopback): the token is only an example.
    async with AsyncBillingClient(
        target, bearer_token="dev-token", retry=retry, allow_insecure_token=True
    ) as billing:
        await billing.create_wallet("acme", "Acme Inc", idempotency_key="create-acme")
        call = await billing.record_call("acme", "inbound", "toll_free", 61, idempotency_key="call-42")
        price = call.usage_record.price
        print(f"{price.billable_units} minutes, ${usd_of(price.amount)}, replayed={call.replayed}")
        sms = await billing.record_sms("acme", usage_pb2.SMS_DIRECTION_OUTBOUND, body="Your code is 123")
        print(f"sms: {sms.usage_record.price.billable_units} segment(s)")
        try:
            await billing.record_email("acme", 0)
        except InvalidArgument as error:
            print(f"rejected: {error.field} ({error.reason})")
        try:
            await billing.get_wallet("nobody", timeout_s=1.0)
        except NotFound as error:
            print(f"not found: {error.reason} {error.metadata}")
        # The raw stub, through the client's deadline, retries and errors.
        raw = usage_service_pb2.RecordUsageRequest(
            company_id="acme", usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))
        )
        reply = await billing.record_usage(raw)
        print(f"raw call recorded under key {reply.usage_record.idempotency_key}")
        wallet = (await billing.get_wallet("acme")).wallet
        print(f"balance: {nanos_of(wallet.balance)} nano-USD")


def bill_blocking(target: str) -> int:
    with BillingClient(target, timeout_s=2.0) as billing:
        try:
            reply = billing.record_email("acme", 1000, request_id="example-1")
        except BillingError as error:
            print(f"failed: {error.code.name} {error.reason}", file=sys.stderr)
            return 1
        return nanos_of(reply.balance_after)


if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"
    asyncio.run(bill(address))
    print(f"balance after emails: {bill_blocking(address)} nano-USD")
