"""The delivery loop: fan out, then one task per endpoint that claims, POSTs and records outcomes.

Safe on many replicas: claims are FOR UPDATE SKIP LOCKED with a lease, so a delivery is attempted by
one replica at a time; a replica that dies mid-attempt loses its lease and another retries the
delivery after `lease_s` (at least once: a receiver may see an event twice and dedupes by `id`).
A slow endpoint never blocks another: each endpoint has its own task and its own concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import structlog

from service.app.events import CHANNEL
from service.app.webhook_endpoints import resolve_checked
from service.config import Config
from service.db.listener import Listener
from service.domain.webhook_hosts import AllowedHosts, check_url
from service.metrics import WEBHOOK_ATTEMPT_SECONDS, WEBHOOK_ATTEMPTS, WEBHOOK_GAVE_UP

from . import store
from .body import event_body
from .fanout import DELIVERY_CHANNEL, companies_behind, fan_out
from .signing import HEADER, signature_header

log = structlog.get_logger(__name__)

_ENDPOINTS_SQL = "select endpoint_id, url, signing_secret from webhook_endpoints where disabled_at is null"
RETRY_AFTER_ERROR_S = 1.0
# The safety net: how often every company's fan-out cursor is compared with its newest event.
SWEEP_S = 10.0
# Companies fanned out at once (one statement each).
FAN_OUT_CONCURRENCY = 4


@dataclass(frozen=True)
class DeliverySettings:
    allowed: AllowedHosts
    timeout_s: float = 10.0
    retry_for_s: float = 72 * 3600.0
    backoff_base_s: float = 30.0
    backoff_max_s: float = 6 * 3600.0
    lease_s: float = 60.0
    per_endpoint_concurrency: int = 4
    poll_s: float = 1.0

    @classmethod
    def from_config(cls, config: Config) -> DeliverySettings:
        return cls(
            allowed=config.webhook_allowed_hosts,
            timeout_s=config.webhook_timeout_s,
            retry_for_s=config.webhook_retry_for_s,
            backoff_base_s=config.webhook_backoff_base_s,
            # Longer than any attempt, so a live attempt never loses its lease to another replica.
            lease_s=max(60.0, 2 * config.webhook_timeout_s + 10.0),
        )


@dataclass(frozen=True)
class _Endpoint:
    endpoint_id: str
    url: str
    secret: str


class Deliverer:
    def __init__(
        self, pool: asyncpg.Pool, database_url: str, settings: DeliverySettings, owner: str | None = None
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._listener = Listener(
            database_url,
            (CHANNEL, DELIVERY_CHANNEL),
            self._on_notify,
            self._wake_all,
            application_name="consofta-billing-webhooks",
        )
        self._wake = asyncio.Event()
        # Companies with new events to fan out; whether to re-read the endpoints, or sweep every company.
        self._dirty: set[str] = set()
        self._refresh = True
        self._sweep = True
        self._endpoint_wakes: dict[str, asyncio.Event] = {}
        self._endpoint_tasks: dict[str, asyncio.Task[None]] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._rng = random.Random()
        self.attempts = 0

    async def start(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.timeout_s), follow_redirects=False, trust_env=False
        )
        await self._listener.start()
        self._task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def stop(self, _grace_s: float = 0.0) -> None:
        """Stop at once: an attempt cut short keeps its lease until it expires, then is retried."""
        tasks = [t for t in (self._task, *self._endpoint_tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._listener.close()
        if self._http is not None:
            await self._http.aclose()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == DELIVERY_CHANNEL:
            wake = self._endpoint_wakes.get(payload)
            if wake is not None:
                wake.set()
                return
            self._refresh = True  # an endpoint this replica does not know yet
        else:
            self._dirty.add(payload.rsplit(":", 1)[0])
        self._wake.set()

    def _wake_all(self) -> None:
        """Notifications may have been lost (the LISTEN connection came back): look at everything."""
        self._refresh = self._sweep = True
        self._wake.set()
        for wake in self._endpoint_wakes.values():
            wake.set()

    async def _run(self) -> None:
        next_sweep = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
            except TimeoutError:
                self._refresh = True  # endpoints registered or disabled elsewhere show up within poll_s
            self._wake.clear()
            try:
                if self._refresh or time.monotonic() >= next_sweep:
                    had_endpoints = bool(self._endpoints)
                    self._refresh = False
                    await self._refresh_endpoints()
                    # The first endpoint: the events since its registration were not followed yet.
                    self._sweep |= bool(self._endpoints) and not had_endpoints
                if not self._endpoints:
                    self._dirty.clear()  # nothing matches; the cursors stay, the first endpoint sweeps
                    continue
                if self._sweep or time.monotonic() >= next_sweep:
                    self._sweep, next_sweep = False, time.monotonic() + SWEEP_S
                    self._dirty.update(await companies_behind(self.pool))
                await self._fan_out_dirty()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook fan-out failed; retrying")
                self._sweep = True
                await asyncio.sleep(RETRY_AFTER_ERROR_S)

    async def _fan_out_dirty(self) -> None:
        while self._dirty:
            batch = [self._dirty.pop() for _ in range(min(len(self._dirty), FAN_OUT_CONCURRENCY))]
            results = await asyncio.gather(
                *(fan_out(self.pool, company, self.settings.retry_for_s) for company in batch)
            )
            touched = frozenset().union(*(r.endpoints for r in results))
            if not touched <= set(self._endpoint_tasks):
                await self._refresh_endpoints()
            for endpoint_id in touched:
                wake = self._endpoint_wakes.get(endpoint_id)
                if wake is not None:
                    wake.set()

    async def _refresh_endpoints(self) -> None:
        rows = await self.pool.fetch(_ENDPOINTS_SQL)
        current = {r["endpoint_id"]: _Endpoint(r["endpoint_id"], r["url"], r["signing_secret"]) for r in rows}
        for endpoint_id in set(self._endpoint_tasks) - set(current):
            self._endpoint_tasks.pop(endpoint_id).cancel()
            self._endpoint_wakes.pop(endpoint_id, None)
        self._endpoints = current
        for endpoint_id in set(current) - set(self._endpoint_tasks):
            self._endpoint_wakes[endpoint_id] = asyncio.Event()
            self._endpoint_tasks[endpoint_id] = asyncio.create_task(
                self._serve_endpoint(endpoint_id), name=f"webhook-{endpoint_id}"
            )

    async def _serve_endpoint(self, endpoint_id: str) -> None:
        """Keep up to `per_endpoint_concurrency` attempts in flight; claim more as each one ends."""
        wake = self._endpoint_wakes[endpoint_id]
        s = self.settings
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            wake.set()

        try:
            while True:
                wake.clear()
                endpoint = self._endpoints.get(endpoint_id)
                if endpoint is None:
                    return
                wait_s = s.poll_s
                free = s.per_endpoint_concurrency - len(in_flight)
                try:
                    if free > 0:
                        claimed = await store.claim(self.pool, endpoint_id, free, s.lease_s, self.owner)
                        for one in claimed:
                            task = asyncio.create_task(self._attempt(endpoint, one))
                            in_flight.add(task)
                            task.add_done_callback(finished)
                        if claimed:
                            continue
                        due_in = await store.next_due_in_s(self.pool, endpoint_id)
                        if due_in is not None:
                            wait_s = min(s.poll_s, max(due_in, 0.01))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook claim failed; retrying", endpoint_id=endpoint_id)
                    wait_s = RETRY_AFTER_ERROR_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait_s)
        finally:
            for task in in_flight:
                task.cancel()

    async def _attempt(self, endpoint: _Endpoint, claimed: store.Claimed) -> None:
        try:
            await self._deliver(endpoint, claimed)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Its lease runs out and the delivery is tried again.
            log.exception("webhook delivery attempt broke", delivery_id=claimed.delivery_id)

    async def _addresses(self, endpoint: _Endpoint) -> tuple[tuple[str, ...], str | None]:
        """(the checked addresses to connect to, None), or ((), why the allow-list refuses the URL
        now): checked at every attempt, after resolving."""
        target, why = check_url(endpoint.url, self.settings.allowed)
        if target is None:
            return (), f"url {why}"
        addresses, why = await resolve_checked(target.host, target.port, self.settings.allowed)
        return (addresses, None) if why is None else ((), f"url {why}")

    async def _post(self, url: str, addresses: tuple[str, ...], body: bytes, headers: dict[str, str]) -> int:
        """POST to the first checked address that takes the connection (as a resolver's list is
        tried in order); the HTTP status."""
        assert self._http is not None
        for i, address in enumerate(addresses):
            pinned_url, host_header, extensions = pinned(url, address)
            try:
                response = await self._http.post(
                    pinned_url, content=body, headers={**headers, "Host": host_header}, extensions=extensions
                )
            except httpx.ConnectError:
                if i == len(addresses) - 1:
                    raise
                continue
            return response.status_code
        raise AssertionError("resolve_checked gives at least one address")

    async def _deliver(self, endpoint: _Endpoint, claimed: store.Claimed) -> None:
        assert self._http is not None
        self.attempts += 1
        status: int | None = None
        addresses, refusal = await self._addresses(endpoint)
        if refusal is None:
            body = event_body(
                claimed.event_id, claimed.event_type, claimed.company_id, claimed.sequence,
                claimed.created_at, claimed.payload_json,
            )  # fmt: skip
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "consofta-billing-webhooks/1",
                HEADER: signature_header(endpoint.secret, body, int(time.time())),
                "Consofta-Event-Id": f"evt_{claimed.event_id}",
                "Consofta-Delivery-Id": str(claimed.delivery_id),
                "Consofta-Delivery-Attempt": str(claimed.attempt),
            }
            sent = time.perf_counter()
            try:
                status = await self._post(endpoint.url, addresses, body, headers)
                result = "delivered" if 200 <= status < 300 else "http_error"
                error = f"HTTP {status}"
            except httpx.TimeoutException:
                result, error = "timeout", f"timed out after {self.settings.timeout_s:g} s"
            except httpx.HTTPError as exc:
                result, error = "connection_error", f"{type(exc).__name__}: {str(exc)[:200]}"
            WEBHOOK_ATTEMPTS.labels(result=result).inc()
            WEBHOOK_ATTEMPT_SECONDS.labels(result=result).observe(time.perf_counter() - sent)
            if result == "delivered":
                assert status is not None
                await store.succeeded(self.pool, claimed, status, self.owner)
                return
        else:
            WEBHOOK_ATTEMPTS.labels(result="refused").inc()
            error = f"refused: {refusal}"
        retry_in = store.backoff_s(
            claimed.attempt, self.settings.backoff_base_s, self.settings.backoff_max_s, self._rng
        )
        state = await store.failed(self.pool, claimed, retry_in, status, error, self.owner)
        if state == "failed":
            WEBHOOK_GAVE_UP.inc()
        log.info(
            "webhook delivery attempt failed",
            endpoint_id=endpoint.endpoint_id,
            delivery_id=claimed.delivery_id,
            attempt=claimed.attempt,
            error=error,
            state=state,
        )


def pinned(url: str, address: str) -> tuple[httpx.URL, str, dict[str, Any]]:
    """The request for `url` sent to the checked `address`: the URL with that address as its host, the
    Host header of the original URL, and for https the original name for SNI, which is also the name
    the certificate is verified against."""
    original = httpx.URL(url)
    extensions: dict[str, Any] = {"sni_hostname": original.host} if original.scheme == "https" else {}
    return original.copy_with(host=address), original.netloc.decode("ascii"), extensions
