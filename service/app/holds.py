"""Holds: funds reserved before a usage happens, captured by RecordUsage or released.

Modelled on telecom online charging: AuthorizeUsage prices the usage and reserves that amount while the
available balance stays at or above the floor; the call ends and RecordUsage debits what was really used.
Expiry is never swept: an active hold past its `expires_at` just stops counting, computed with now() by
every read, so no sweeper lag can show.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from service.app import idempotency
from service.app.db_errors import raise_domain_error
from service.app.rows import Row
from service.domain.money import format_usd
from service.domain.usage_kinds import Usage, fingerprint, kind_of, meter

DEFAULT_HOLD_DURATION = timedelta(hours=1)
MIN_HOLD_DURATION = timedelta(seconds=1)
MAX_HOLD_DURATION = timedelta(hours=24)
# More than any usage kind's maximum (a week of call seconds, ten million emails): a caller's bug beyond.
MAX_HOLD_EXTENSION_QUANTITY = 10_000_000

AUTHORIZE_USAGE = "authorize_usage"
_AUTHORIZE_SQL = """
    select * from authorize_usage(
        p_hold_id => $1, p_company_id => $2, p_request_id => $3, p_request_hash => $4, p_usage_type => $5,
        p_rate_key => $6, p_billable_units => $7, p_ttl => $8, p_quantity => $9, p_quantity_per_unit => $10,
        p_allow_partial => $11)
"""
EXTEND_HOLD = "extend_hold"
_EXTEND_SQL = """
    select * from extend_hold(
        p_company_id => $1, p_hold_id => $2, p_request_id => $3, p_request_hash => $4,
        p_additional_quantity => $5, p_ttl => $6, p_allow_partial => $7)
"""
_RELEASE_SQL = "select h.*, now() as checked_at from release_hold(p_company_id => $1, p_hold_id => $2) h"


class Denial(StrEnum):
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    WALLET_SUSPENDED = "WALLET_SUSPENDED"


class HoldState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"  # derived at read time, never stored
    RELEASED = "released"
    CAPTURED = "captured"


@dataclass(frozen=True)
class Hold:
    hold_id: uuid.UUID
    company_id: str
    request_id: str
    amount_nanos: int
    state: HoldState
    created_at: datetime
    expires_at: datetime
    usage_record_id: uuid.UUID | None
    # The usage the hold covers, in its kind's quantity (a call's seconds).
    authorized_quantity: int


@dataclass(frozen=True)
class Authorization:
    allowed: bool
    amount_nanos: int
    available_nanos: int
    floor_nanos: int
    hold: Hold | None
    denial: Denial | None
    replayed: bool
    # How much of the usage's quantity the wallet affords (all of it, or the part that was held).
    affordable_quantity: int

    @property
    def denial_message(self) -> str:
        return _denial_message(self.denial, self.amount_nanos, self.available_nanos, self.floor_nanos)


@dataclass(frozen=True)
class Extension:
    extended: bool
    hold: Hold
    added_amount_nanos: int
    affordable_quantity: int
    available_nanos: int
    floor_nanos: int
    denial: Denial | None
    replayed: bool

    @property
    def denial_message(self) -> str:
        if self.denial is Denial.INSUFFICIENT_FUNDS:
            return (
                f"only {self.affordable_quantity} more of the hold's usage is affordable: "
                f"{format_usd(self.available_nanos - self.floor_nanos)} USD is available above the floor"
            )
        return _denial_message(self.denial, 0, self.available_nanos, self.floor_nanos)


def _denial_message(denial: Denial | None, amount_nanos: int, available_nanos: int, floor_nanos: int) -> str:
    if denial is Denial.WALLET_SUSPENDED:
        return (
            "the wallet is suspended: its balance is at or below the floor and it has no card or its "
            "last recharge failed"
        )
    if denial is Denial.INSUFFICIENT_FUNDS:
        return (
            f"the usage costs {format_usd(amount_nanos)} USD but only "
            f"{format_usd(available_nanos - floor_nanos)} USD is available above the floor"
        )
    return ""


def hold_of(row: Row, now: datetime) -> Hold:
    state = HoldState(row["state"])
    if state is HoldState.ACTIVE and row["expires_at"] <= now:
        state = HoldState.EXPIRED
    return Hold(
        hold_id=row["hold_id"],
        company_id=row["company_id"],
        request_id=row["request_id"],
        amount_nanos=row["amount_nanos"],
        state=state,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        usage_record_id=row["usage_record_id"],
        authorized_quantity=row["authorized_quantity"],
    )


async def authorize_usage(
    pool: asyncpg.Pool,
    company_id: str,
    usage: Usage,
    request_id: str,
    duration: timedelta = DEFAULT_HOLD_DURATION,
    allow_partial: bool = False,
) -> Authorization:
    """Price `usage` and hold that amount if the available balance stays at or above the floor; with
    `allow_partial`, hold the affordable part of it when the whole is not affordable."""
    metering = meter(usage)
    kind = kind_of(usage)
    # allow_partial joins the fingerprint only when set, so earlier keys keep their fingerprints.
    parts: tuple[object, ...] = (*fingerprint(usage), int(duration.total_seconds()))
    if allow_partial:
        parts = (*parts, "allow_partial")
    request = idempotency.Request(
        AUTHORIZE_USAGE,
        company_id,
        request_id,
        idempotency.fingerprint(company_id, *parts),  # type: ignore[arg-type]
    )
    proposed = uuid.uuid4()
    try:
        row = await pool.fetchrow(
            _AUTHORIZE_SQL,
            proposed,
            company_id,
            request_id,
            request.fingerprint,
            kind.name,
            metering.rate_key,
            metering.billable_units,
            duration,
            metering.quantity,
            kind.quantity_per_unit,
            allow_partial,
        )
    except asyncpg.PostgresError as exc:
        raise_domain_error(exc, company_id, rate_key=metering.rate_key)
    assert row is not None
    replayed = bool(row["replayed"])
    if replayed:
        idempotency.check(request, row["claimed_operation"], row["claimed_hash"])
    stored = row["hold"]
    if stored is not None and stored["hold_id"] is not None:
        hold = hold_of(stored, row["checked_at"])
        return Authorization(
            allowed=True,
            amount_nanos=hold.amount_nanos,
            # On a replay the hold is the stored one and the available balance is today's.
            available_nanos=row["available_nanos"],
            floor_nanos=row["floor_nanos"],
            hold=hold,
            denial=None,
            replayed=replayed,
            affordable_quantity=row["affordable_quantity"],
        )
    return Authorization(
        allowed=False,
        amount_nanos=row["amount_nanos"],
        available_nanos=row["available_nanos"],
        floor_nanos=row["floor_nanos"],
        hold=None,
        denial=Denial(row["denial"]),
        replayed=False,
        affordable_quantity=row["affordable_quantity"],
    )


async def extend_hold(
    pool: asyncpg.Pool,
    company_id: str,
    hold_id: uuid.UUID,
    request_id: str,
    additional_quantity: int,
    duration: timedelta = DEFAULT_HOLD_DURATION,
    allow_partial: bool = False,
) -> Extension:
    """Grow an active (or expired) hold by `additional_quantity` of its usage, or by the affordable part
    of it with `allow_partial`, and move its expiry to `duration` from now."""
    request = idempotency.Request(
        EXTEND_HOLD,
        company_id,
        request_id,
        idempotency.fingerprint(
            company_id, str(hold_id), additional_quantity, int(duration.total_seconds()), allow_partial
        ),
    )
    try:
        row = await pool.fetchrow(
            _EXTEND_SQL,
            company_id,
            hold_id,
            request_id,
            request.fingerprint,
            additional_quantity,
            duration,
            allow_partial,
        )
    except asyncpg.PostgresError as exc:
        raise_domain_error(exc, company_id, hold_id=hold_id)
    assert row is not None
    replayed = bool(row["replayed"])
    if replayed:
        idempotency.check(request, row["claimed_operation"], row["claimed_hash"])
    extension = row["extension"]
    extended = extension is not None and extension["request_id"] is not None
    return Extension(
        extended=extended,
        hold=hold_of(row["hold"], row["checked_at"]),
        added_amount_nanos=extension["added_amount_nanos"] if extended else 0,
        affordable_quantity=row["affordable_quantity"],
        available_nanos=row["available_nanos"],
        floor_nanos=row["floor_nanos"],
        denial=None if row["denial"] is None else Denial(row["denial"]),
        replayed=replayed,
    )


async def release_hold(pool: asyncpg.Pool, company_id: str, hold_id: uuid.UUID) -> Hold:
    """Release an unused hold; a released or expired one is returned unchanged."""
    try:
        row = await pool.fetchrow(_RELEASE_SQL, company_id, hold_id)
    except asyncpg.PostgresError as exc:
        raise_domain_error(exc, company_id, hold_id=hold_id)
    assert row is not None
    return hold_of(row, row["checked_at"])
