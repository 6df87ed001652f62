"""The support commands of the CLI (company, wallet, recharges): each one short use of a use case.

They attach to the database the service uses; with no DATABASE_URL that is the embedded Postgres: when
`serve` is running it, they connect to it straight away (and leave it running), otherwise they start it
for the command and stop it after. Each prints readable text, or JSON with --json (`cli_output`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.cli_output import emit, money, table
from service.config import Config


@asynccontextmanager
async def database(config: Config) -> AsyncIterator[str]:
    """The database URL; with no DATABASE_URL, the embedded Postgres, left as it was found."""
    if config.database_url:
        yield config.database_url
        return
    from service.db.embedded import running_url

    attached = running_url(config.pgdata)
    if attached is not None:
        # A running `serve` owns the embedded Postgres it started: an admin command must not stop it.
        yield attached
        return
    from service.db.startup import open_database

    url, embedded = await open_database(config)
    try:
        yield url
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def company_create(config: Config, args: argparse.Namespace) -> int:
    from service.app.wallets import create_wallet
    from service.db.pool import create_pool
    from service.domain.money import format_usd

    request_id = args.request_id or f"cli-create-{args.company_id}"
    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            created = await create_wallet(pool, args.company_id, args.name or args.company_id, request_id)
        finally:
            await pool.close()
    wallet = created.wallet
    verb = "already existed (same request id)" if created.replayed else "created"
    record = {
        "company_id": wallet.company_id,
        "display_name": wallet.display_name,
        "replayed": created.replayed,
        "request_id": request_id,
        **money("balance", wallet.balance_nanos),
    }
    text = (
        f"company {wallet.company_id} ({wallet.display_name}) {verb}; "
        f"balance {format_usd(wallet.balance_nanos)} USD"
    )
    emit(args, record, text)
    return 0


async def wallet_show(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from service.admin import wallet_view
    from service.domain.money import format_usd

    async with database(config) as url:
        conn = await asyncpg.connect(url)
        try:
            view = await wallet_view(conn, args.company_id, args.last)
        finally:
            await conn.close()
    record = {
        "company_id": view.company_id,
        "display_name": view.display_name,
        **money("balance", view.balance_nanos),
        **money("minimum_balance", view.minimum_balance_nanos),
        "below_minimum": view.below_minimum,
        "ledger_entries": view.last_sequence,
        "entries": [
            {
                "sequence": e.sequence,
                "created_at": e.created_at,
                "entry_type": e.entry_type,
                **money("amount", e.amount_nanos),
                **money("balance_after", e.balance_after_nanos),
                "reference": e.reference,
                "description": e.description,
            }
            for e in view.entries
        ],
    }
    below = " (below minimum)" if view.below_minimum else ""
    lines = [
        f"company   {view.company_id} ({view.display_name})",
        f"balance   {format_usd(view.balance_nanos)} USD",
        f"minimum   {format_usd(view.minimum_balance_nanos)} USD{below}",
        f"entries   {view.last_sequence} in all; the last {len(view.entries)}, newest first:",
    ]
    if view.entries:
        rows = [
            (
                str(e.sequence),
                f"{e.created_at:%Y-%m-%d %H:%M:%S}",
                e.entry_type,
                format_usd(e.amount_nanos),
                format_usd(e.balance_after_nanos),
                " ".join(p for p in (e.description, f"[{e.reference}]" if e.reference else "") if p),
            )
            for e in view.entries
        ]
        headers = ("seq", "at (UTC)", "type", "amount USD", "balance USD", "note")
        lines.append(_indent(table(headers, rows, right=(0, 3, 4))))
    emit(args, record, "\n".join(lines))
    return 0


async def recharges_list(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from service.admin import recharge_attempts
    from service.domain.money import format_usd

    async with database(config) as url:
        conn = await asyncpg.connect(url)
        try:
            attempts = await recharge_attempts(conn, args.company_id, args.last)
        finally:
            await conn.close()
    record = {
        "company_id": args.company_id,
        "attempts": [
            {
                "attempt_id": a.attempt_id,
                "created_at": a.created_at,
                "kind": a.kind,
                "status": a.status,
                **money("amount", a.amount_nanos),
                "card": a.card,
                "payment_intent_id": a.payment_intent_id,
                "decline": a.decline,
                "retry_number": a.retry_number,
                "call_count": a.call_count,
                "next_attempt_at": a.next_attempt_at,
                "last_error": a.last_error,
            }
            for a in attempts
        ],
    }
    lines = [f"company   {args.company_id}: {len(attempts)} recharge attempt(s), newest first"]
    if attempts:
        rows = [
            (
                f"{a.created_at:%Y-%m-%d %H:%M:%S}",
                a.attempt_id,
                a.kind,
                a.status,
                format_usd(a.amount_nanos),
                a.card,
                str(a.retry_number),
                str(a.call_count),
                " ".join(
                    part
                    for part in (
                        a.payment_intent_id or "",
                        f"declined ({a.decline})" if a.decline else "",
                        f"last error: {a.last_error}" if a.last_error else "",
                        f"next try {a.next_attempt_at:%Y-%m-%d %H:%M:%S}" if a.next_attempt_at else "",
                    )
                    if part
                ),
            )
            for a in attempts
        ]
        headers = ("at (UTC)", "attempt", "kind", "status", "amount USD", "card", "retry", "calls", "detail")
        lines.append(_indent(table(headers, rows, right=(4, 6, 7))))
    emit(args, record, "\n".join(lines))
    return 0


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
