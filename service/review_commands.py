"""The `stripe-reviews` commands: list the Stripe webhook events held for review, and resolve one.

Like the other admin commands they work on the database directly. A resolution records the operating-
system user (`cli:<user>`).
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from datetime import UTC

from service.admin_commands import database
from service.cli_output import emit, table
from service.config import Config


async def reviews_list(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from service.recharge.webhook_reviews import list_reviews

    async with database(config) as url:
        conn = await asyncpg.connect(url)
        try:
            reviews = await list_reviews(conn, open_only=not args.all, limit=args.last)
        finally:
            await conn.close()
    records = [
        {
            "event_id": r.event_id,
            "event_type": r.event_type,
            "company_id": r.company_id,
            "attempt_id": str(r.attempt_id),
            "payment_intent_id": r.payment_intent_id,
            "reasons": list(r.reasons),
            "details": r.details,
            "received_at": r.received_at,
            "resolved_at": r.resolved_at,
            "resolution": r.resolution,
            "resolved_by": r.resolved_by,
        }
        for r in reviews
    ]
    if not reviews:
        text = "no Stripe webhook events " + ("held for review" if args.all else "waiting for review")
    else:
        rows = [
            (
                f"{r.received_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z",
                r.event_id,
                r.event_type,
                r.company_id,
                str(r.attempt_id),
                ",".join(r.reasons),
                "open" if r.resolved_at is None else f"resolved by {r.resolved_by or '?'}: {r.resolution}",
            )
            for r in reviews
        ]
        headers = ("received (UTC)", "event", "type", "company", "attempt", "reasons", "state")
        text = table(headers, rows)
    emit(args, {"reviews": records}, text)
    return 0


async def reviews_resolve(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from service.domain.errors import InvalidArgument
    from service.recharge.webhook_reviews import resolution_violations, resolve_review

    violations = resolution_violations(args.event_id, args.resolution)
    if violations:  # before the database is opened
        raise InvalidArgument(violations)
    async with database(config) as url:
        conn = await asyncpg.connect(url)
        try:
            review, replayed = await resolve_review(
                conn, args.event_id, args.resolution, f"cli:{getpass.getuser()}"
            )
        finally:
            await conn.close()
    done = "was already resolved so (nothing changed)" if replayed else "resolved"
    record = {
        "event_id": review.event_id,
        "company_id": review.company_id,
        "resolved_at": review.resolved_at,
        "resolution": review.resolution,
        "resolved_by": review.resolved_by,
        "replayed": replayed,
    }
    emit(args, record, f"Stripe webhook event {review.event_id} of {review.company_id} {done}")
    return 0


def add_review_commands(
    command: Callable[..., argparse.ArgumentParser],
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    positive_int: Callable[[str], int],
) -> None:
    reviews = sub.add_parser(
        "stripe-reviews",
        help="Stripe webhook events held for review",
        description="Stripe webhook events that did not match their recharge attempt: nothing was credited.",
    )
    reviews_sub = reviews.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(reviews_sub, "list", reviews_list, "list the events waiting for review, newest first")
    listing.add_argument("--all", action="store_true", help="resolved ones too")
    listing.add_argument(
        "--last", type=positive_int, default=50, metavar="N", help="events to show (default 50)"
    )
    resolve = command(
        reviews_sub, "resolve", reviews_resolve, "record what was found and done about one held event"
    )
    resolve.add_argument("event_id", metavar="EVENT", help="the Stripe event id (evt_...)")
    resolve.add_argument("--resolution", required=True, help="what was found and done (kept)")
