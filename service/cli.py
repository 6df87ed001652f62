"""The `consofta-billing` command: run the service, manage its schema, probe it, and support work.

Exit codes: 0 done; 1 the command failed (unknown company, the server is not serving...); 2 bad usage
or configuration, including an argument refused by the use case rather than by the parser (one line on
stderr names the argument or variable). Commands other than `serve` and `worker` log only warnings and
errors (to stderr) unless given -v; their result goes to stdout, as text or, with --json, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

# The embedded Postgres is started and stopped with subprocesses; gRPC's fork handlers only matter for
# os.fork() without exec, which this service never does, and they print a warning on every spawn.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from service.admin_commands import (
    company_create,
    database,
    recharges_list,
    wallet_show,
)
from service.config import Config, ConfigError, StartupError, load_config

PROG = "consofta-billing"


class CommandError(Exception):
    """A failure to report as one line and exit code 1."""


# -- argument types: a bad value is reported by argparse with the argument's name and exit code 2 ------


def _company_id(value: str) -> str:
    from service.domain.ids import COMPANY_ID

    if not COMPANY_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a company id (1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit)"
        )
    return value


def _usd_amount_nanos(value: str) -> int:
    """AMOUNT_USD such as `25` or `12.50`, parsed exactly (never through a float) into nanos."""
    from decimal import Decimal, InvalidOperation

    from service.domain.money import NANOS_PER_USD

    try:
        amount = Decimal(value.removeprefix("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{value!r} is not an amount in USD (e.g. 12.50)") from None
    if not amount.is_finite() or amount <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive amount in USD")
    nanos = amount * NANOS_PER_USD
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


async def _migrate(config: Config, args: argparse.Namespace) -> int:
    from service.cli_output import emit
    from service.db.startup import apply_migrations

    async with database(config) as url:
        version = await apply_migrations(url)
    emit(args, {"schema_version": version}, str(version))
    return 0


async def _schema_version(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from service.cli_output import emit
    from service.db.migrate import available_migrations, current_version

    async with database(config) as url:
        conn = await asyncpg.connect(url)
        try:
            version = await current_version(conn)
        finally:
            await conn.close()
    known = available_migrations()
    latest = known[-1].version if known else 0
    emit(args, {"schema_version": version, "code_schema_version": latest}, str(version))
    if version != latest:
        print(f"{PROG}: this code's latest migration is {latest}; run `{PROG} migrate`", file=sys.stderr)
    return 0


def _health(config: Config, args: argparse.Namespace) -> int:
    from service.cli_output import emit
    from service.probe import check, probe_target

    target = args.target or probe_target(config.grpc_host, config.grpc_port)
    status = check(target, args.service, args.timeout_s)
    record = {"target": target, "service": args.service, "status": status}
    emit(args, record, f"{target} {args.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


def _serve(config: Config, args: argparse.Namespace) -> int:
    workers = config.grpc_workers if args.workers is None else args.workers
    try:
        if workers == 1:
            from service import event_loop
            from service.server import serve

            event_loop.run(serve(config), config.event_loop)
        else:
            from service.supervisor import WorkerStartError, serve_workers

            try:
                asyncio.run(serve_workers(config, workers))
            except WorkerStartError as error:
                raise CommandError(str(error)) from None
    except KeyboardInterrupt:
        pass
    except ConfigError as error:  # found once the database answers: the connection budget, a port
        print(f"{PROG}: configuration error: {error}", file=sys.stderr)
        return 2
    return 0


def _workers(value: str) -> int:
    from service.config import grpc_workers

    try:
        return grpc_workers(value, "--workers")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _worker(config: Config, _args: argparse.Namespace) -> int:
    from service import tracing
    from service.recharge.worker import run_worker

    traced = tracing.start()  # the loop's database and Stripe calls, as under `serve`
    try:
        asyncio.run(run_worker(config))
    except KeyboardInterrupt:
        pass
    finally:
        if traced is not None:
            traced.shutdown()
    return 0


# -- parser -----------------------------------------------------------------------------------------------

Handler = Callable[[Config, argparse.Namespace], "int | Awaitable[int]"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Consofta usage billing. Configuration comes from environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Options every command takes, after its name: `wallet show acme --json -v`.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress to stderr (-vv: debug lines too)"
    )
    printing = argparse.ArgumentParser(add_help=False, parents=[verbose])
    printing.add_argument("--json", action="store_true", help="print the result as one JSON document")

    def command(parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler,
                help_text: str, *, prints: bool = True) -> argparse.ArgumentParser:  # fmt: skip
        cmd = parent.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            parents=[printing if prints else verbose],
        )
        cmd.set_defaults(handler=handler)
        return cmd

    serve = command(sub, "serve", _serve, "run the gRPC server (migrates the database first)", prints=False)
    serve.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="server processes sharing the gRPC port (1-64, or 'auto': one per usable core); "
        "default BILLING_GRPC_WORKERS, else 1",
    )
    command(
        sub, "worker", _worker, "run only the auto-recharge loop, without gRPC (migrates first)", prints=False
    )
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
    create = command(company_sub, "create", company_create, "create a company and its empty wallet")
    create.add_argument("company_id", metavar="COMPANY", type=_company_id, help="the new company's id")
    create.add_argument("--name", help="display name (default: the company id)")
    create.add_argument(
        "--request-id",
        help="idempotency key; repeating the command with it changes nothing (default: derived)",
    )

    wallet = sub.add_parser("wallet", help="wallets", description="Inspect, credit and debit wallets.")
    wallet_sub = wallet.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = command(wallet_sub, "show", wallet_show, "show a wallet's balance, minimum and last entries")
    show.add_argument("company_id", metavar="COMPANY", type=_company_id, help="the company's id")
    show.add_argument(
        "--last", type=_positive_int, default=10, metavar="N", help="ledger entries to show (default 10)"
    )
    from service.correction_commands import add_correction_commands
    from service.key_commands import add_keys_commands
    from service.review_commands import add_review_commands

    add_correction_commands(command, sub, wallet_sub, _company_id, _usd_amount_nanos)

    add_keys_commands(sub, _company_id)
    add_review_commands(command, sub, _positive_int)
    from service.webhook_commands import add_webhook_commands

    add_webhook_commands(sub)

    recharges = sub.add_parser("recharges", help="card recharges", description="Inspect card recharges.")
    recharges_sub = recharges.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(
        recharges_sub, "list", recharges_list, "list a company's recharge attempts, newest first"
    )
    listing.add_argument("company_id", metavar="COMPANY", type=_company_id, help="the company's id")
    listing.add_argument(
        "--last", type=_positive_int, default=20, metavar="N", help="attempts to show (default 20)"
    )
    return parser


# The long-running commands log what they do at the configured level; the others are quiet by default.
_DAEMONS = frozenset({"serve", "worker"})


def _log_level(config: Config, args: argparse.Namespace) -> str:
    verbosity = getattr(args, "verbose", 0)
    if verbosity >= 2:
        return "debug"
    if args.command in _DAEMONS:
        return "debug" if verbosity else config.log_level
    return "info" if verbosity else "warning"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config()
    except ConfigError as error:
        print(f"{PROG}: configuration error: {error}", file=sys.stderr)
        # Docker reserves a HEALTHCHECK exit code of 2: a probe reports "unhealthy" (1) instead.
        return 1 if args.command == "health" else 2

    from service.logs import configure_logging

    configure_logging(config.log_format, _log_level(config, args))
    try:
        outcome = args.handler(config, args)
        if asyncio.iscoroutine(outcome):
            outcome = asyncio.run(outcome)
        return int(outcome)
    except CommandError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except StartupError as error:  # a port taken, a data folder in use: what was started is stopped
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from service.db.migrate import MigrationError
        from service.domain.errors import BillingError, InvalidArgument

        if isinstance(error, InvalidArgument):  # an argument refused by the use case: bad usage too
            print(f"{PROG}: {error}", file=sys.stderr)
            return 2
        if isinstance(error, BillingError | MigrationError):
            print(f"{PROG}: {error}", file=sys.stderr)
            return 1
        if isinstance(error, OSError):  # e.g. the database refuses connections
            print(f"{PROG}: cannot reach the database: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
