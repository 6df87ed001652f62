"""The `consofta-billing` command: serve, migrate, schema-version."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

# The embedded Postgres is started and stopped with subprocesses; gRPC's fork handlers only matter for
# os.fork() without exec, which this service never does, and they print a warning on every spawn.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncpg

from service.config import ConfigError, load_config
from service.db.migrate import current_version
from service.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consofta-billing", description="Consofta usage-billing service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the gRPC server (migrates the database first)")
    sub.add_parser("worker", help="run only the auto-recharge loop, without gRPC (migrates first)")
    sub.add_parser("migrate", help="apply pending schema migrations and exit")
    sub.add_parser("schema-version", help="print the schema version of the database")
    return parser


async def _with_database(action: str) -> int:
    from service.server import apply_migrations, open_database

    config = load_config()
    url, embedded = await open_database(config)
    try:
        if action == "migrate":
            version = await apply_migrations(url)
        else:
            conn = await asyncpg.connect(url)
            try:
                version = await current_version(conn)
            finally:
                await conn.close()
        print(version)
        return 0
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config()
    except ConfigError as error:
        print(f"consofta-billing: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level)
    if args.command == "serve":
        from service.server import serve

        try:
            asyncio.run(serve(config))
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "worker":
        from service.recharge.worker import run_worker

        try:
            asyncio.run(run_worker(config))
        except KeyboardInterrupt:
            pass
        return 0
    return asyncio.run(_with_database(args.command))


if __name__ == "__main__":
    sys.exit(main())
