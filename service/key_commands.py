"""The `keys` commands of the CLI: create (prints the secret once, alone on the last line), list, revoke.

Like the other admin commands they work on the database directly: whoever may run them already holds
the database's credentials. The audit columns record the operating-system user (`cli:<user>`).
"""

from __future__ import annotations

import argparse
import getpass
import re
from datetime import UTC, datetime, timedelta

from service.admin_commands import database
from service.config import Config

_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LIFETIME = timedelta(days=3660)


def duration(value: str) -> timedelta:
    """An --expires-in value: a whole number and a unit, e.g. 90d, 12h, 30m, 45s."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{value[:20]!r} is not a duration such as 90d, 12h, 30m or 45s")
    lifetime = timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
    if lifetime > MAX_LIFETIME:
        raise argparse.ArgumentTypeError(f"{value!r} is longer than {MAX_LIFETIME.days} days")
    return lifetime


def key_id(value: str) -> str:
    from service.app.api_keys import KEY_ID

    if not KEY_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a key id (key_ and 16 letters or digits)")
    return value


def _operator() -> str:
    return f"cli:{getpass.getuser()}"


def _when(moment: datetime | None, empty: str = "-") -> str:
    return empty if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


async def keys_create(config: Config, args: argparse.Namespace) -> int:
    from service.app.api_keys import create_key
    from service.db.pool import create_pool

    expires_at = None if args.expires_in is None else datetime.now(UTC) + args.expires_in
    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            created = await create_key(
                pool, args.name, args.role, args.companies or None, _operator(), expires_at
            )
        finally:
            await pool.close()
    key = created.key
    scope = ", ".join(key.companies) if key.companies else "every company"
    expires = _when(key.expires_at, "never")
    print(f"created {key.key_id} ({key.name}): role {key.role}, {scope}, expires {expires}")
    print("The secret follows, alone on the last line. It is shown once: store it now.")
    print(created.secret)
    return 0


async def keys_list(config: Config, _args: argparse.Namespace) -> int:
    from service.app.api_keys import list_keys
    from service.db.pool import create_pool

    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            keys = await list_keys(pool)
        finally:
            await pool.close()
    print(
        f"{'id':<20}  {'name':<24}  {'role':<12}  {'companies':<24}  {'created':<20}  {'last used':<20}  "
        f"{'expires':<20}  revoked"
    )
    for k in keys:
        companies = ",".join(k.companies) if k.companies else "*"
        revoked = f"{_when(k.revoked_at)} by {k.revoked_by}" if k.revoked_at else "-"
        print(
            f"{k.key_id:<20}  {k.name[:24]:<24}  {k.role:<12}  {companies[:24]:<24}  "
            f"{_when(k.created_at):<20}  {_when(k.last_used_at):<20}  "
            f"{_when(k.expires_at, 'never'):<20}  {revoked}"
        )
    return 0


async def keys_revoke(config: Config, args: argparse.Namespace) -> int:
    from service.app.api_keys import revoke_key
    from service.db.pool import create_pool

    async with database(config) as url:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            key = await revoke_key(pool, args.key_id, _operator())
        finally:
            await pool.close()
    print(f"revoked {key.key_id} ({key.name}) at {_when(key.revoked_at)} by {key.revoked_by}")
    return 0


def add_keys_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], company_id_type: object
) -> None:
    from service.domain.principals import ROLE_NAMES

    keys = sub.add_parser("keys", help="API keys", description="Create, list and revoke API keys.")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create",
        help="create a key; its secret is printed once, alone on the last line of stdout",
        description="Create an API key. Its secret is printed once, alone on the last line of stdout.",
    )
    create.set_defaults(handler=keys_create)
    create.add_argument("--name", required=True, help="what the key is for, e.g. dashboard-prod")
    create.add_argument("--role", required=True, choices=ROLE_NAMES, help="what the key may call (README)")
    create.add_argument(
        "--company",
        dest="companies",
        action="append",
        type=company_id_type,  # type: ignore[arg-type]
        metavar="ID",
        help="bind the key to this company (repeatable); without it the key spans every company",
    )
    create.add_argument(
        "--expires-in", type=duration, metavar="DURATION", help="e.g. 90d, 12h (default: never expires)"
    )
    listing = keys_sub.add_parser("list", help="list keys", description="List every key, revoked ones too.")
    listing.set_defaults(handler=keys_list)
    revoke = keys_sub.add_parser(
        "revoke",
        help="revoke a key (refused by every replica within seconds)",
        description="Revoke a key: every replica refuses it within seconds. Revoking again changes nothing.",
    )
    revoke.set_defaults(handler=keys_revoke)
    revoke.add_argument("key_id", metavar="ID", type=key_id, help="the key's id, as `keys list` shows it")
