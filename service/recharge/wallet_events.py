"""What the recharge engine tells a company: wallet events, emitted in the caller's transaction."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection of our own or one borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy


async def emit(conn: Conn, company_id: str, event_type: str, payload: dict[str, Any]) -> None:
    """Append a wallet event; it becomes visible (and NOTIFYs) when the caller's transaction commits."""
    await conn.execute(
        "select emit_wallet_event(p_company_id => $1, p_event_type => $2, p_payload => $3::jsonb)",
        company_id,
        event_type,
        json.dumps(payload, default=str),
    )


def card_label(brand: str, last4: str) -> str:
    """The card as a person reads it in an event or a ledger description: "Visa •••• 4242"."""
    return f"{brand.replace('_', ' ').title()} •••• {last4}"
