"""The service's own SQLSTATEs (raised by its SQL functions) -> domain errors, in one place."""

from __future__ import annotations

import uuid
from typing import NoReturn

import asyncpg

from service.db import sqlstate
from service.domain.errors import (
    AmountOutOfRange,
    BillingError,
    CompanyNotFound,
    HoldAlreadyCaptured,
    HoldNotFound,
    HoldReleased,
    NoRateCard,
    UsageRecordNotFound,
    VoidExceedsRecord,
)


def message_of(exc: asyncpg.PostgresError) -> str:
    return str(getattr(exc, "message", None) or exc)


def domain_error(
    state: str | None,
    message: str,
    company_id: str,
    *,
    rate_key: str | None = None,
    hold_id: uuid.UUID | None = None,
    usage_record_id: uuid.UUID | None = None,
) -> BillingError | None:
    """The domain error a SQLSTATE (with the database's message) stands for, or None for any other."""
    if state == sqlstate.WALLET_NOT_FOUND:
        return CompanyNotFound(company_id)
    if state == sqlstate.NO_RATE_CARD and rate_key is not None:
        return NoRateCard(message, metadata={"rate_key": rate_key})
    if state == sqlstate.NUMERIC_VALUE_OUT_OF_RANGE:
        return AmountOutOfRange()
    if usage_record_id is not None:
        if state == sqlstate.USAGE_RECORD_NOT_FOUND:
            return UsageRecordNotFound(company_id, str(usage_record_id))
        if state == sqlstate.VOID_EXCEEDS_RECORD:
            metadata = {"company_id": company_id, "usage_record_id": str(usage_record_id)}
            return VoidExceedsRecord(message, metadata=metadata)
    if hold_id is not None:
        metadata = {"company_id": company_id, "hold_id": str(hold_id)}
        if state == sqlstate.HOLD_NOT_FOUND:
            return HoldNotFound(company_id, str(hold_id))
        if state == sqlstate.HOLD_ALREADY_CAPTURED:
            return HoldAlreadyCaptured(message, metadata=metadata)
        if state == sqlstate.HOLD_RELEASED:
            return HoldReleased(message, metadata=metadata)
    return None


def raise_domain_error(
    exc: asyncpg.PostgresError,
    company_id: str,
    *,
    rate_key: str | None = None,
    hold_id: uuid.UUID | None = None,
    usage_record_id: uuid.UUID | None = None,
) -> NoReturn:
    """Raise the domain error a SQLSTATE stands for; re-raise anything else unchanged."""
    error = domain_error(
        exc.sqlstate,
        message_of(exc),
        company_id,
        rate_key=rate_key,
        hold_id=hold_id,
        usage_record_id=usage_record_id,
    )
    if error is None:
        raise exc
    raise error from None
