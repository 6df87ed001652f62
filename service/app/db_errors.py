"""The service's own SQLSTATEs (raised by its SQL functions) -> domain errors, in one place."""

from __future__ import annotations

import uuid
from typing import NoReturn

import asyncpg

from service.db import sqlstate
from service.domain.errors import (
    AmountOutOfRange,
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


def raise_domain_error(
    exc: asyncpg.PostgresError,
    company_id: str,
    *,
    rate_key: str | None = None,
    hold_id: uuid.UUID | None = None,
    usage_record_id: uuid.UUID | None = None,
) -> NoReturn:
    """Raise the domain error a SQLSTATE stands for; re-raise anything else unchanged."""
    state = exc.sqlstate
    if state == sqlstate.WALLET_NOT_FOUND:
        raise CompanyNotFound(company_id) from None
    if state == sqlstate.NO_RATE_CARD and rate_key is not None:
        raise NoRateCard(message_of(exc), metadata={"rate_key": rate_key}) from None
    if state == sqlstate.NUMERIC_VALUE_OUT_OF_RANGE:
        raise AmountOutOfRange() from None
    if usage_record_id is not None:
        if state == sqlstate.USAGE_RECORD_NOT_FOUND:
            raise UsageRecordNotFound(company_id, str(usage_record_id)) from None
        if state == sqlstate.VOID_EXCEEDS_RECORD:
            metadata = {"company_id": company_id, "usage_record_id": str(usage_record_id)}
            raise VoidExceedsRecord(message_of(exc), metadata=metadata) from None
    if hold_id is not None:
        metadata = {"company_id": company_id, "hold_id": str(hold_id)}
        if state == sqlstate.HOLD_NOT_FOUND:
            raise HoldNotFound(company_id, str(hold_id)) from None
        if state == sqlstate.HOLD_ALREADY_CAPTURED:
            raise HoldAlreadyCaptured(message_of(exc), metadata=metadata) from None
        if state == sqlstate.HOLD_RELEASED:
            raise HoldReleased(message_of(exc), metadata=metadata) from None
    raise exc
