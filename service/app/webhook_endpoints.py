"""Outbound webhook endpoints and their deliveries: register (the secret is returned once), list,
disable, list deliveries, redeliver. The deliverer itself is `service.webhooks`.

Endpoints are deployment-wide, so their request ids are kept under one idempotency scope of their own
(`SCOPE`), apart from every company's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.app import idempotency
from service.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from service.domain.ids import COMPANY_ID
from service.domain.text import excerpt
from service.domain.webhook_hosts import AllowedHosts, check_url, refused_addresses

SCOPE = "_webhooks"
ENDPOINT_ID = re.compile(r"we_[a-z2-7]{16}")
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_EVENT_TYPES = 50
MAX_DESCRIPTION_CHARS = 200
STATES = ("pending", "succeeded", "failed")
MAX_PAGE_SIZE = 500


class EndpointNotFound(NotFound):
    reason = "WEBHOOK_ENDPOINT_NOT_FOUND"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(
            f"no webhook endpoint {endpoint_id[:40]!r}", metadata={"endpoint_id": endpoint_id[:40]}
        )


class DeliveryNotFound(NotFound):
    reason = "WEBHOOK_DELIVERY_NOT_FOUND"

    def __init__(self, delivery_id: int) -> None:
        super().__init__(f"no webhook delivery {delivery_id}", metadata={"delivery_id": str(delivery_id)})


class DeliveryNotFinished(FailedPrecondition):
    reason = "WEBHOOK_DELIVERY_PENDING"


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]
    company_id: str | None
    description: str
    created_at: datetime
    created_by: str
    disabled_at: datetime | None


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: Endpoint
    signing_secret: str


@dataclass(frozen=True)
class Delivery:
    delivery_id: int
    endpoint_id: str
    company_id: str
    event_id: int
    event_sequence: int
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class _Stored:
    endpoint_id: str


_ENDPOINT_COLUMNS = (
    "endpoint_id, url, event_types, company_filter, description, created_at, created_by, disabled_at"
)
_DELIVERY_COLUMNS = (
    "delivery_id, endpoint_id, company_id, event_id, event_sequence, state, attempts, next_attempt_at,"
    " last_status, last_error, created_at, finished_at"
)
_INSERT_SQL = f"""
    insert into webhook_endpoints (endpoint_id, url, event_types, company_filter, description,
                                   signing_secret, created_by)
    values ($1, $2, $3, $4, $5, $6, $7) returning {_ENDPOINT_COLUMNS}
"""
_GET_SQL = f"select {_ENDPOINT_COLUMNS}, signing_secret from webhook_endpoints where endpoint_id = $1"
_LIST_SQL = f"""
    select {_ENDPOINT_COLUMNS} from webhook_endpoints where $1 or disabled_at is null
     order by created_at, endpoint_id
"""
_DISABLE_SQL = f"""
    update webhook_endpoints set disabled_at = coalesce(disabled_at, now()),
           disabled_by = coalesce(disabled_by, $2)
     where endpoint_id = $1 returning {_ENDPOINT_COLUMNS}
"""
# A disabled endpoint is sent nothing more: its pending deliveries end 'failed' (redeliverable once it
# would be enabled again; today a disabled endpoint stays disabled).
_FAIL_PENDING_SQL = """
    update webhook_deliveries set state = 'failed', finished_at = now(), lease_until = null,
           leased_by = null, last_error = 'endpoint disabled'
     where endpoint_id = $1 and state = 'pending'
"""
_DELIVERIES_SQL = f"""
    select {_DELIVERY_COLUMNS} from webhook_deliveries
     where ($1::text is null or endpoint_id = $1) and ($2::text is null or state = $2)
       and ($3::text is null or company_id = $3) and delivery_id < $4
     order by delivery_id desc limit $5
"""
_DELIVERY_SQL = f"select {_DELIVERY_COLUMNS} from webhook_deliveries where delivery_id = $1 for update"
_REDELIVER_SQL = f"""
    update webhook_deliveries
       set state = 'pending', next_attempt_at = now(), give_up_at = now() + make_interval(secs => $3),
           finished_at = null, last_error = null, last_status = null
     where company_id = $1 and delivery_id = $2 returning {_DELIVERY_COLUMNS}
"""


def new_endpoint_id() -> str:
    return "we_" + base64.b32encode(secrets.token_bytes(10)).decode().lower()


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        company_id=row["company_filter"],
        description=row["description"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        disabled_at=row["disabled_at"],
    )


def _delivery(row: asyncpg.Record) -> Delivery:
    pending = row["state"] == "pending"
    return Delivery(
        **{k: row[k] for k in _DELIVERY_COLUMNS.replace(" ", "").split(",") if k != "next_attempt_at"},
        next_attempt_at=row["next_attempt_at"] if pending else None,
    )


async def resolve_checked(host: str, port: int, allowed: AllowedHosts) -> tuple[tuple[str, ...], str | None]:
    """(the addresses of `host`, all accepted by the allow-list, None), or ((), why it refuses `host`).

    The deliverer connects to those very addresses (pinned), so a name that answers differently a
    moment later (DNS rebinding) cannot carry a request to an address that was never checked.
    """
    literal = host.strip("[]")
    if allowed.listed_exactly(host) and refused_addresses([literal], allowed) == []:
        return (literal,), None  # a listed address literal: nothing to resolve
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        return (), f"has host {host[:64]!r}, which cannot be resolved ({error})"
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))  # in resolver order, once each
    refused = refused_addresses(addresses, allowed)
    if refused:
        return (), (
            f"has host {host[:64]!r}, which resolves to {', '.join(refused[:3])}: not a public address and "
            "not listed in BILLING_WEBHOOK_ALLOWED_HOSTS"
        )
    if not addresses:
        return (), f"has host {host[:64]!r}, which resolves to no address"
    return addresses, None


async def resolution_refusal(host: str, port: int, allowed: AllowedHosts) -> str | None:
    """Why the allow-list refuses `host` after resolving it, or None."""
    return (await resolve_checked(host, port, allowed))[1]


async def endpoint_violations(
    url: str, event_types: tuple[str, ...], company_id: str | None, description: str, allowed: AllowedHosts
) -> list[FieldViolation]:
    found = []
    target, why = check_url(url, allowed)
    if target is not None:
        why = await resolution_refusal(target.host, target.port, allowed)
    if why is not None:
        found.append(FieldViolation("url", why))
    if len(event_types) > MAX_EVENT_TYPES:
        found.append(
            FieldViolation("event_types", f"names {len(event_types)} types; the limit is {MAX_EVENT_TYPES}")
        )
    for index, event_type in enumerate(event_types):
        if not EVENT_TYPE.fullmatch(event_type):
            found.append(
                FieldViolation(f"event_types[{index}]", f"{excerpt(event_type)} is not an event type")
            )
    if len(set(event_types)) != len(event_types):
        found.append(FieldViolation("event_types", "names a type twice"))
    if company_id is not None and not COMPANY_ID.fullmatch(company_id):
        found.append(FieldViolation("company_id", "must be empty (every company) or a company id"))
    if len(description) > MAX_DESCRIPTION_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in description):
        found.append(
            FieldViolation("description", f"must be at most {MAX_DESCRIPTION_CHARS} printable characters")
        )
    return found


async def create_endpoint(
    pool: asyncpg.Pool, allowed: AllowedHosts, request_id: str, url: str, event_types: tuple[str, ...],
    company_id: str | None, description: str, created_by: str,
) -> CreatedEndpoint:  # fmt: skip
    violations = await endpoint_violations(url, event_types, company_id, description, allowed)
    if violations:
        raise InvalidArgument(violations)
    parts = (url, ",".join(event_types), company_id, description)
    key = idempotency.Request("create_webhook_endpoint", SCOPE, request_id, idempotency.fingerprint(*parts))
    async with pool.acquire() as conn, conn.transaction():
        seen = await idempotency.claim(conn, key)
        if seen is not None and seen.result is not None:
            # A retry of the same call: the same endpoint, secret included (its caller never saw it).
            row = await conn.fetchrow(_GET_SQL, idempotency.result_of(_Stored, seen.result).endpoint_id)
            assert row is not None
            return CreatedEndpoint(_endpoint(row), row["signing_secret"])
        secret = new_signing_secret()
        row = await conn.fetchrow(
            _INSERT_SQL,
            new_endpoint_id(),
            url,
            list(event_types),
            company_id,
            description,
            secret,
            created_by,
        )
        assert row is not None
        await idempotency.save_result(conn, key, _Stored(row["endpoint_id"]))
        # The deliverers learn of it at commit (service.webhooks.fanout.DELIVERY_CHANNEL).
        await conn.execute("select pg_notify('webhook_deliveries', $1)", row["endpoint_id"])
        return CreatedEndpoint(_endpoint(row), secret)


async def list_endpoints(pool: asyncpg.Pool, include_disabled: bool) -> list[Endpoint]:
    return [_endpoint(r) for r in await pool.fetch(_LIST_SQL, include_disabled)]


async def disable_endpoint(
    pool: asyncpg.Pool, request_id: str, endpoint_id: str, disabled_by: str
) -> Endpoint:
    key = idempotency.Request(
        "disable_webhook_endpoint", SCOPE, request_id, idempotency.fingerprint(endpoint_id)
    )
    async with pool.acquire() as conn, conn.transaction():
        await idempotency.claim(conn, key)  # disabling twice is harmless: a replay runs again
        row = await conn.fetchrow(_DISABLE_SQL, endpoint_id, disabled_by)
        if row is None:
            raise EndpointNotFound(endpoint_id)
        await conn.execute(_FAIL_PENDING_SQL, endpoint_id)
        return _endpoint(row)


def page_token(delivery_id: int) -> str:
    return base64.urlsafe_b64encode(f"wd1:{delivery_id}".encode()).decode().rstrip("=")


def parse_page_token(raw: str) -> int | None:
    """The delivery id to list below; None when the token is not one of ours."""
    if not raw:
        return 2**63 - 1
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    match = re.fullmatch(r"wd1:([0-9]{1,19})", text)
    return int(match.group(1)) if match and int(match.group(1)) < 2**63 else None


async def list_deliveries(
    pool: asyncpg.Pool, endpoint_id: str | None, state: str | None, company_id: str | None, below_id: int,
    page_size: int,
) -> tuple[list[Delivery], str]:  # fmt: skip
    rows = await pool.fetch(_DELIVERIES_SQL, endpoint_id, state, company_id, below_id, page_size + 1)
    found = [_delivery(r) for r in rows[:page_size]]
    return found, page_token(found[-1].delivery_id) if len(rows) > page_size else ""


async def redeliver(pool: asyncpg.Pool, request_id: str, delivery_id: int, retry_for_s: float) -> Delivery:
    """Send a finished delivery (failed, or succeeded) again, with a fresh retry window."""
    key = idempotency.Request(
        "redeliver_webhook_delivery", SCOPE, request_id, idempotency.fingerprint(delivery_id)
    )
    async with pool.acquire() as conn, conn.transaction():
        seen = await idempotency.claim(conn, key)
        row = await conn.fetchrow(_DELIVERY_SQL, delivery_id)
        if row is None:
            raise DeliveryNotFound(delivery_id)
        if seen is not None:
            return _delivery(row)  # a replay: the delivery as it is now
        if row["state"] == "pending":
            raise DeliveryNotFinished(
                f"webhook delivery {delivery_id} is still pending; only a finished one can be redelivered",
                metadata={"delivery_id": str(delivery_id)},
            )
        disabled = await conn.fetchval(
            "select disabled_at is not null from webhook_endpoints where endpoint_id = $1", row["endpoint_id"]
        )
        if disabled:
            raise FailedPrecondition(
                f"webhook endpoint {row['endpoint_id']} is disabled",
                metadata={"endpoint_id": row["endpoint_id"]},
            )
        updated = await conn.fetchrow(_REDELIVER_SQL, row["company_id"], delivery_id, retry_for_s)
        assert updated is not None
        # Wakes the endpoint's deliverers (service.webhooks.fanout.DELIVERY_CHANNEL) at commit.
        await conn.execute("select pg_notify('webhook_deliveries', $1)", row["endpoint_id"])
        return _delivery(updated)
