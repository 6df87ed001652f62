"""The `webhooks` commands of the CLI: create (prints the signing secret once, alone on the last line),
list, disable, deliveries, redeliver. Like the `keys` commands they work on the database directly;
the audit columns record the operating-system user (`cli:<user>`)."""

from __future__ import annotations

import argparse
import getpass
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from service.admin_commands import database
from service.config import Config


@asynccontextmanager
async def _pool(config: Config) -> AsyncIterator[asyncpg.Pool]:
    from service.db.pool import create_pool

    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            yield pool
        finally:
            await pool.close()


def _request_id(args: argparse.Namespace) -> str:
    return args.request_id or f"cli-{uuid.uuid4().hex}"


async def webhooks_create(config: Config, args: argparse.Namespace) -> int:
    from service.app.webhook_endpoints import create_endpoint

    async with _pool(config) as pool:
        created = await create_endpoint(
            pool, config.webhook_allowed_hosts, _request_id(args), args.url, tuple(args.event_types or ()),
            args.company, args.description or "", f"cli:{getpass.getuser()}",
        )  # fmt: skip
    endpoint = created.endpoint
    types = ", ".join(endpoint.event_types) or "every type"
    print(
        f"created {endpoint.endpoint_id}: {endpoint.url} ({types}, {endpoint.company_id or 'every company'})"
    )
    print("The signing secret follows, alone on the last line. It is shown once: store it now.")
    print(created.signing_secret)
    return 0


async def webhooks_list(config: Config, _args: argparse.Namespace) -> int:
    from service.app.webhook_endpoints import list_endpoints

    async with _pool(config) as pool:
        for e in await list_endpoints(pool, include_disabled=True):
            state = "enabled" if e.disabled_at is None else f"disabled {e.disabled_at:%Y-%m-%d %H:%M}Z"
            types = ",".join(e.event_types) or "*"
            print(f"{e.endpoint_id}  {state:26}  {types:30}  {e.company_id or '*':12}  {e.url}")
    return 0


async def webhooks_disable(config: Config, args: argparse.Namespace) -> int:
    from service.app.webhook_endpoints import disable_endpoint

    async with _pool(config) as pool:
        endpoint = await disable_endpoint(
            pool, _request_id(args), args.endpoint_id, f"cli:{getpass.getuser()}"
        )
    print(f"disabled {endpoint.endpoint_id} ({endpoint.url})")
    return 0


async def webhooks_deliveries(config: Config, args: argparse.Namespace) -> int:
    from service.app.webhook_endpoints import list_deliveries

    async with _pool(config) as pool:
        found, _ = await list_deliveries(pool, args.endpoint, args.state, None, 2**63 - 1, args.last)
    for d in found:
        error = f"  {d.last_error}" if d.last_error else ""
        print(f"{d.delivery_id:>8}  {d.endpoint_id}  {d.company_id:20}  evt_{d.event_id:<10} {d.state:9} "
              f"attempts={d.attempts}{error}")  # fmt: skip
    return 0


async def webhooks_redeliver(config: Config, args: argparse.Namespace) -> int:
    from service.app.webhook_endpoints import redeliver

    async with _pool(config) as pool:
        delivery = await redeliver(pool, _request_id(args), args.delivery_id, config.webhook_retry_for_s)
    print(f"delivery {delivery.delivery_id} is {delivery.state} again (event evt_{delivery.event_id})")
    return 0


def add_webhook_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from service.app.webhook_endpoints import STATES

    hooks = sub.add_parser("webhooks", help="outbound webhooks", description="Manage outbound webhooks.")
    hooks_sub = hooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = hooks_sub.add_parser("create", help="register an endpoint; prints its signing secret once")
    create.set_defaults(handler=webhooks_create)
    create.add_argument("url", help="https URL allowed by BILLING_WEBHOOK_ALLOWED_HOSTS")
    create.add_argument("--event-type", dest="event_types", action="append", metavar="TYPE",
                        help="send only this type (repeatable; default every type)")  # fmt: skip
    create.add_argument("--company", help="only this company's events (default every company)")
    create.add_argument("--description", help="a note for operators")
    create.add_argument("--request-id", help="idempotency key (default: a new one)")
    listing = hooks_sub.add_parser("list", help="list endpoints, disabled ones too")
    listing.set_defaults(handler=webhooks_list)
    disable = hooks_sub.add_parser("disable", help="stop sending to an endpoint")
    disable.set_defaults(handler=webhooks_disable)
    disable.add_argument("endpoint_id", metavar="ID")
    disable.add_argument("--request-id", help="idempotency key (default: a new one)")
    deliveries = hooks_sub.add_parser("deliveries", help="list deliveries, newest first")
    deliveries.set_defaults(handler=webhooks_deliveries)
    deliveries.add_argument("--state", choices=STATES)
    deliveries.add_argument("--endpoint", metavar="ID")
    deliveries.add_argument("--last", type=int, default=50, metavar="N")
    again = hooks_sub.add_parser("redeliver", help="send a finished delivery again")
    again.set_defaults(handler=webhooks_redeliver)
    again.add_argument("delivery_id", metavar="DELIVERY_ID", type=int)
    again.add_argument("--request-id", help="idempotency key (default: a new one)")
