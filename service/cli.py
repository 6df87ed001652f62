"""The `consofta-billing` command: run the service, manage its schema, probe it, and support work.

Exit codes: 0 done; 1 the command failed (unknown company, the server is not serving...); 2 bad usage
or configuration (one line on stderr names the argument or variable).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

# The embedded Postgres is started and stopped with subprocesses; gRPC's fork handlers only matter for
# os.fork() without exec, which this service never does, and they print a warning on every spawn.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from service.config import Config, ConfigError, load_config

PROG = "consofta-billing"


class CommandError(Exception):
    """A failure to report as one line and exit code 1."""


# -- argument types: a bad value is reported by argparse with the argument's name and exit code 2 ------


def _company_id(value: str) -> str:
    from service.api.validation import COMPANY_ID

    if not COMPANY_ID.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a company id (1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit)"
        )
    return value


def _usd_amount_nanos(value: str) -> int:
    """AMOUNT_USD such as `25` or `12.50`, parsed exactly (never through a float) into nanos."""
    from decimal import Decimal, InvalidOperation

    try:
        amount = Decimal(value.removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount in USD (e.g. 12.50)") from None
    if not amount.is_finite() or amount <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive amount in USD")
    nanos = amount * 1_000_000_000
    if nanos != nanos.to_integral_value():
        raise argparse.ArgumentTypeError(f"{value!r} has more than 9 decimal places")
    return int(nanos)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= number <= 10_000:
        raise argparse.ArgumentTypeError(f"{number} is out of range (1-10000)")
    return number


# -- commands ---------------------------------------------------------------------------------------------


def _postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata.expanduser().resolve() / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


@asynccontextmanager
async def _database(config: Config) -> AsyncIterator[str]:
    """The database URL; with no DATABASE_URL, the embedded Postgres, left as it was found."""
    from service.db.startup import open_database

    was_running = config.database_url is None and _postmaster_running(config.pgdata)
    url, embedded = await open_database(config)
    try:
        yield url
    finally:
        # A running `serve` owns an embedded Postgres it started: an admin command must not stop it.
        if embedded is not None and not was_running:
            await asyncio.to_thread(embedded.stop)


async def _migrate(config: Config, _args: argparse.Namespace) -> int:
    from service.db.startup import apply_migrations

    async with _database(config) as url:
        print(await apply_migrations(url))
    return 0


async def _schema_version(config: Config, _args: argparse.Namespace) -> int:
    import asyncpg

    from service.db.migrate import available_migrations, current_version

    async with _database(config) as url:
        conn = await asyncpg.connect(url)
        try:
            version = await current_version(conn)
        finally:
            await conn.close()
    print(version)
    known = available_migrations()
    latest = known[-1].version if known else 0
    if version != latest:
        print(f"{PROG}: this code's latest migration is {latest}; run `{PROG} migrate`", file=sys.stderr)
    return 0


def _health(config: Config, args: argparse.Namespace) -> int:
    from service.probe import check, probe_target

    target = args.target or probe_target(config.grpc_host, config.grpc_port)
    status = check(target, args.service, args.timeout_s)
    print(f"{target} {args.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


async def _company_create(config: Config, args: argparse.Namespace) -> int:
    from service.app.wallets import create_wallet
    from service.db.pool import create_pool
    from service.domain.money import format_usd

    request_id = args.request_id or f"cli-create-{args.company_id}"
    async with _database(config) as url:
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


async def _wallet_show(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from service.admin import wallet_view
    from service.domain.money import format_usd

    async with _database(config) as url:
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


async def _recharges_list(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from service.admin import recharge_attempts
    from service.domain.money import format_usd

    async with _database(config) as url:
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


async def _wallet_credit(config: Config, args: argparse.Namespace) -> int:
    import getpass
    import uuid

    from service.app.credits import credit_wallet
    from service.db.pool import create_pool
    from service.domain.money import format_usd

    request_id = args.request_id or f"cli-credit-{uuid.uuid4()}"
    actor = args.actor or f"cli:{getpass.getuser()}"
    async with _database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            credit = await credit_wallet(
                pool, args.company_id, args.amount_nanos, args.reason, request_id, actor=actor
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


def _serve(config: Config, _args: argparse.Namespace) -> int:
    from service.server import serve

    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    return 0


def _worker(config: Config, _args: argparse.Namespace) -> int:
    from service.recharge.worker import run_worker

    try:
        asyncio.run(run_worker(config))
    except KeyboardInterrupt:
        pass
    return 0


# -- parser -----------------------------------------------------------------------------------------------

Handler = Callable[[Config, argparse.Namespace], "int | Awaitable[int]"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Consofta usage billing. Configuration comes from environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler,
                help_text: str) -> argparse.ArgumentParser:  # fmt: skip
        cmd = parent.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        cmd.set_defaults(handler=handler)
        return cmd

    command(sub, "serve", _serve, "run the gRPC server (migrates the database first)")
    command(sub, "worker", _worker, "run only the auto-recharge loop, without gRPC (migrates first)")
    command(sub, "migrate", _migrate, "apply pending schema migrations, print the schema version, exit")
    command(sub, "schema-version", _schema_version, "print the schema version of the database")
    health = command(
        sub, "health", _health, "check that the local server is SERVING (exit 0) or not (exit 1)"
    )
    health.add_argument("--target", help="HOST:PORT to probe (default: this configuration's gRPC address)")
    health.add_argument("--service", default="", help="service name to check (default: the whole server)")
    health.add_argument("--timeout-s", type=float, default=3.0, help="seconds to wait for an answer")

    company = sub.add_parser("company", help="companies", description="Manage companies.")
    company_sub = company.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = command(company_sub, "create", _company_create, "create a company and its empty wallet")
    create.add_argument("company_id", metavar="COMPANY", type=_company_id, help="the new company's id")
    create.add_argument("--name", help="display name (default: the company id)")
    create.add_argument(
        "--request-id",
        help="idempotency key; repeating the command with it changes nothing (default: derived)",
    )

    wallet = sub.add_parser("wallet", help="wallets", description="Inspect and credit wallets.")
    wallet_sub = wallet.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = command(wallet_sub, "show", _wallet_show, "show a wallet's balance, minimum and last entries")
    show.add_argument("company_id", metavar="COMPANY", type=_company_id, help="the company's id")
    show.add_argument(
        "--last", type=_positive_int, default=10, metavar="N", help="ledger entries to show (default 10)"
    )
    credit = command(
        wallet_sub,
        "credit",
        _wallet_credit,
        "add money to a wallet (a manual credit in the ledger) with a reason",
    )
    credit.add_argument("company_id", metavar="COMPANY", type=_company_id, help="the company's id")
    credit.add_argument(
        "amount_nanos", metavar="AMOUNT_USD", type=_usd_amount_nanos, help="amount in USD, e.g. 12.50"
    )
    credit.add_argument("--reason", required=True, help="why the money is added (kept in the ledger)")
    credit.add_argument(
        "--request-id",
        help="idempotency key: repeating the command with it credits once (default: a new one, printed)",
    )
    credit.add_argument("--actor", help="who credits (default: cli:<your user name>)")

    recharges = sub.add_parser("recharges", help="card recharges", description="Inspect card recharges.")
    recharges_sub = recharges.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(
        recharges_sub, "list", _recharges_list, "list a company's recharge attempts, newest first"
    )
    listing.add_argument("company_id", metavar="COMPANY", type=_company_id, help="the company's id")
    listing.add_argument(
        "--last", type=_positive_int, default=20, metavar="N", help="attempts to show (default 20)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config()
    except ConfigError as error:
        print(f"{PROG}: configuration error: {error}", file=sys.stderr)
        # Docker reserves a HEALTHCHECK exit code of 2: a probe reports "unhealthy" (1) instead.
        return 1 if args.command == "health" else 2

    from service.logs import configure_logging

    configure_logging(config.log_format, config.log_level)
    try:
        outcome = args.handler(config, args)
        if asyncio.iscoroutine(outcome):
            outcome = asyncio.run(outcome)
        return int(outcome)
    except CommandError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        from service.db.migrate import MigrationError
        from service.domain.errors import BillingError

        if isinstance(error, BillingError | MigrationError):
            print(f"{PROG}: {error}", file=sys.stderr)
            return 1
        if isinstance(error, OSError):  # e.g. the database refuses connections
            print(f"{PROG}: cannot reach the database: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
