"""The company's customer at the payment provider, and what every card call shares: the idempotency
keys of provider POSTs, a request's idempotency claim, and a provider failure as a domain error.

Every provider POST carries an idempotency key derived from the company and the caller's request id,
so a retry of the same request never makes a second customer, SetupIntent or attachment.
"""

from __future__ import annotations

import asyncpg
import structlog

from service.app import idempotency
from service.domain.errors import Aborted, CompanyNotFound, PaymentProviderRefused, PaymentProviderUnavailable
from service.payments.provider import (
    IdempotencyConflict,
    OutcomeUnknown,
    PaymentProvider,
    PaymentProviderError,
)

log = structlog.get_logger(__name__)


def customer_idempotency_key(company_id: str) -> str:
    """One key per company, forever: a crash between the provider creating the customer and our
    insert, followed by a retry, gets the same customer back instead of a second one."""
    return f"consofta-customer-{company_id}"


def provider_key(operation: str, company_id: str, *parts: str) -> str:
    """An idempotency key for one provider POST of one request (request ids may be 255 characters
    long, so they are hashed into the key)."""
    return f"consofta-{operation}-{idempotency.fingerprint(company_id, *parts).hex()[:40]}"


def provider_failure(error: PaymentProviderError, what: str) -> Exception:
    """The domain error for a provider failure (the provider's messages never hold secrets)."""
    if isinstance(error, OutcomeUnknown):
        return PaymentProviderUnavailable(
            f"the payment provider did not answer while {what}; retry with the same request_id",
            metadata={"provider_code": error.code or ""},
        )
    if isinstance(error, IdempotencyConflict):
        return Aborted(
            f"the payment provider is still working on an earlier attempt of this request while {what}; "
            "retry with the same request_id in a moment",
            metadata={"provider_code": error.code or ""},
        )
    return PaymentProviderRefused(
        f"the payment provider refused the request while {what}: {error}",
        metadata={"provider_code": error.code or ""},
    )


async def ensure_customer(pool: asyncpg.Pool, provider: PaymentProvider, company_id: str) -> str:
    """The company's provider customer id, created the first time it is needed."""
    existing = await pool.fetchval(
        "select provider_customer_id from payment_customers where company_id = $1", company_id
    )
    if existing is not None:
        return str(existing)
    if await pool.fetchval("select true from billing_settings where company_id = $1", company_id) is None:
        raise CompanyNotFound(company_id)
    try:
        customer_id = await provider.create_customer(company_id, customer_idempotency_key(company_id))
    except PaymentProviderError as error:
        raise provider_failure(error, "creating the payment customer") from None
    stored = await pool.fetchval(
        """
        insert into payment_customers (company_id, provider_customer_id) values ($1, $2)
        on conflict (company_id) do update set provider_customer_id = payment_customers.provider_customer_id
        returning provider_customer_id
        """,
        company_id,
        customer_id,
    )
    if stored != customer_id:
        # A concurrent first request stored another customer (possible only after the provider forgot
        # our key). Ours stays unused at the provider; the stored one is the company's.
        log.warning("payment customer created twice; keeping the stored one", company_id=company_id)
    return str(stored)


def request_of(operation: str, company_id: str, request_id: str, *parts: str) -> idempotency.Request:
    return idempotency.Request(
        operation, company_id, request_id, idempotency.fingerprint(operation, company_id, *parts)
    )
