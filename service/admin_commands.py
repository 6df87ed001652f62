"""The support commands of the CLI (company, wallet, recharges): each one short use of a use case.

They attach to the database the service uses; with no DATABASE_URL that is the embedded Postgres, which
they leave as they found it (a running `serve` owns it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from service.config import Config


def postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata.expanduser().resolve() / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


@asynccontextmanager
async def database(config: Config) -> AsyncIterator[str]:
    """The database URL; with no DATABASE_URL, the embedded Postgres, left as it was found."""
    from service.db.startup import open_database

    was_running = config.database_url is None and postmaster_running(config.pgdata)
    url, embedded = await open_database(config)
    try:
        yield url
    finally:
        # A running `serve` owns an embedded Postgres it started: an admin command must not stop it.
        if embedded is not None and not was_running:
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
    print(
        f"company {wallet.company_id} ({wallet.display_name}) {verb}; "
        f"balance {format_usd(wallet.balance_nanos)} USD"
    )
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
    print(f"company   {view.company_id} ({view.display_name})")
    print(f"balance   {format_usd(view.balance_nanos)} USD")
    below = " (below minimum)" if view.below_minimum else ""
    print(f"minimum   {format_usd(view.minimum_balance_nanos)} USD{below}")
    print(f"entries   {view.last_sequence} in all; the last {len(view.entries)}, newest first:")
    if view.entries:
        print(f"  {'seq':>6}  {'at (UTC)':<19}  {'type':<15}  {'amount USD':>18}  {'balance USD':>18}  note")
    for e in view.entries:
        note = " ".join(part for part in (e.description, f"[{e.reference}]" if e.reference else "") if part)
        print(
            f"  {e.sequence:>6}  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.entry_type:<15}  "
            f"{format_usd(e.amount_nanos):>18}  {format_usd(e.balance_after_nanos):>18}  {note}"
        )
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
    print(f"company   {args.company_id}: {len(attempts)} recharge attempt(s), newest first")
    for a in attempts:
        when = f"next try {a.next_attempt_at:%Y-%m-%d %H:%M:%S}" if a.next_attempt_at else ""
        detail = " ".join(
            part
            for part in (
                a.payment_intent_id or "",
                f"declined ({a.decline})" if a.decline else "",
                f"last error: {a.last_error}" if a.last_error else "",
                when,
            )
            if part
        )
        print(
            f"  {a.created_at:%Y-%m-%d %H:%M:%S}  {a.attempt_id}  {a.kind:<7}  {a.status:<15}  "
            f"{format_usd(a.amount_nanos):>16} USD  {a.card}  retry {a.retry_number}, "
            f"{a.call_count} call(s)  {detail}".rstrip()
        )
    return 0


async def wallet_credit(config: Config, args: argparse.Namespace) -> int:
    import getpass
    import uuid

    from service.app.credits import credit_wallet
    from service.db.pool import create_pool
    from service.domain.money import format_usd

    request_id = args.request_id or f"cli-credit-{uuid.uuid4()}"
    actor = args.actor or f"cli:{getpass.getuser()}"
    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            credit = await credit_wallet(
                pool,
                args.company_id,
                args.amount_nanos,
                args.reason,
                request_id,
                actor=actor,
                principal_id=f"cli:{getpass.getuser()}",
            )
        finally:
            await pool.close()
    done = "was already applied (same request id)" if credit.replayed else "applied"
    print(
        f"credit of {format_usd(credit.amount_nanos)} USD to {credit.company_id} {done}: "
        f"ledger entry {credit.ledger_sequence}, balance {format_usd(credit.balance_after_nanos)} USD, "
        f"request id {request_id}"
    )
    return 0
