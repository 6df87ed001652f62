"""The CLI's money corrections: `wallet credit`, `wallet debit` and `usage void`.

They call the same use cases as CreditWallet, DebitWallet and VoidUsageRecord, idempotent under
--request-id, and record the operating-system user as the principal (`cli:<user>`).
"""

from __future__ import annotations

import argparse
import getpass
import uuid
from collections.abc import Callable

from service.admin_commands import database
from service.cli_output import emit, money
from service.config import Config


def _operator() -> str:
    return f"cli:{getpass.getuser()}"


def usage_record_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a usage record id (a UUID)") from None


async def wallet_credit(config: Config, args: argparse.Namespace) -> int:
    return await _manual_entry(config, args, debit=False)


async def wallet_debit(config: Config, args: argparse.Namespace) -> int:
    return await _manual_entry(config, args, debit=True)


async def _manual_entry(config: Config, args: argparse.Namespace, *, debit: bool) -> int:
    """A manual credit or debit: CreditWallet's and DebitWallet's use cases, under the same rules."""
    from service.app.credits import credit_violations, credit_wallet, debit_wallet
    from service.db.pool import create_pool
    from service.domain.errors import InvalidArgument
    from service.domain.money import format_usd

    name = "debit" if debit else "credit"
    request_id = args.request_id or f"cli-{name}-{uuid.uuid4()}"
    actor = args.actor or _operator()
    # Checked before the database is opened: a bad argument costs no connection and says so at once.
    violations = credit_violations(args.amount_nanos, args.reason, actor)
    if violations:
        raise InvalidArgument(violations)
    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            if debit:
                entry = await debit_wallet(
                    pool, args.company_id, args.amount_nanos, args.reason, request_id, actor, _operator()
                )
            else:
                entry = await credit_wallet(
                    pool,
                    args.company_id,
                    args.amount_nanos,
                    args.reason,
                    request_id,
                    actor=actor,
                    principal_id=_operator(),
                )
        finally:
            await pool.close()
    amount_nanos = abs(entry.amount_nanos)  # a debit's entry carries the negative amount
    done = "was already applied (same request id)" if entry.replayed else "applied"
    record = {
        "company_id": entry.company_id,
        **money("amount", amount_nanos),
        "replayed": entry.replayed,
        "ledger_sequence": entry.ledger_sequence,
        **money("balance_after", entry.balance_after_nanos),
        "request_id": request_id,
    }
    direction = "from" if debit else "to"
    text = (
        f"{name} of {format_usd(amount_nanos)} USD {direction} {entry.company_id} {done}: "
        f"ledger entry {entry.ledger_sequence}, balance {format_usd(entry.balance_after_nanos)} USD, "
        f"request id {request_id}"
    )
    emit(args, record, text)
    return 0


async def usage_void(config: Config, args: argparse.Namespace) -> int:
    from service.app.corrections import void_usage_record
    from service.app.credits import credit_violations
    from service.db.pool import create_pool
    from service.domain.errors import InvalidArgument
    from service.domain.money import format_usd

    request_id = args.request_id or f"cli-void-{uuid.uuid4()}"
    actor = args.actor or _operator()
    violations = credit_violations(1 if args.amount_nanos is None else args.amount_nanos, args.reason, actor)
    if violations:
        raise InvalidArgument(violations)
    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            void = await void_usage_record(
                pool,
                args.company_id,
                args.usage_record_id,
                args.reason,
                request_id,
                actor,
                args.amount_nanos,
                principal_id=_operator(),
            )
        finally:
            await pool.close()
    done = "was already applied (same request id)" if void.replayed else "applied"
    record = {
        "company_id": void.company_id,
        "usage_record_id": str(void.usage_record_id),
        **money("amount", void.amount_nanos),
        **money("record_amount", void.record_amount_nanos),
        **money("voided", void.voided_nanos),
        "replayed": void.replayed,
        "ledger_sequence": void.entry.sequence,
        **money("balance_after", void.entry.balance_after_nanos),
        "request_id": request_id,
    }
    text = (
        f"void of {format_usd(void.amount_nanos)} USD of record {void.usage_record_id} {done}: "
        f"{format_usd(void.voided_nanos)} of {format_usd(void.record_amount_nanos)} USD voided, "
        f"ledger entry {void.entry.sequence}, balance {format_usd(void.entry.balance_after_nanos)} USD, "
        f"request id {request_id}"
    )
    emit(args, record, text)
    return 0


Command = Callable[..., argparse.ArgumentParser]


def add_correction_commands(
    command: Command,
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    wallet_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    company_id_type: Callable[[str], str],
    usd_type: Callable[[str], int],
) -> None:
    manual = (
        (
            "credit",
            wallet_credit,
            "add money to a wallet (a manual credit in the ledger)",
            "credits",
            "added",
        ),
        ("debit", wallet_debit, "take money from a wallet (a manual debit in the ledger)", "debits", "taken"),
    )
    for name, handler, what, verb, moved in manual:
        cmd = command(wallet_sub, name, handler, f"{what} with a reason")
        cmd.add_argument("company_id", metavar="COMPANY", type=company_id_type, help="the company's id")
        cmd.add_argument(
            "amount_nanos", metavar="AMOUNT_USD", type=usd_type, help="amount in USD, e.g. 12.50"
        )
        _audit_arguments(cmd, verb, moved)

    usage = sub.add_parser("usage", help="usage records", description="Correct usage records.")
    usage_sub = usage.add_subparsers(dest="action", required=True, metavar="ACTION")
    void = command(usage_sub, "void", usage_void, "reverse a usage record, in full or in part, with a reason")
    void.add_argument("company_id", metavar="COMPANY", type=company_id_type, help="the company's id")
    void.add_argument(
        "usage_record_id", metavar="RECORD", type=usage_record_id, help="the usage record's id (a UUID)"
    )
    void.add_argument(
        "--amount",
        dest="amount_nanos",
        metavar="AMOUNT_USD",
        type=usd_type,
        help="how much to void, in USD (default: all of the record that is not voided yet)",
    )
    _audit_arguments(void, "voids", "given back")


def _audit_arguments(cmd: argparse.ArgumentParser, verb: str, moved: str) -> None:
    cmd.add_argument("--reason", required=True, help=f"why the money is {moved} (kept in the ledger)")
    cmd.add_argument(
        "--request-id",
        help=f"idempotency key: repeating the command with it {verb} once (default: a new one, printed)",
    )
    cmd.add_argument("--actor", help=f"who {verb} (default: cli:<your user name>)")
