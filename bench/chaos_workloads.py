"""What the fault harness's clients send (bench/chaos.py), one pluggable workload per way of recording.

A workload's `step()` sends one request (or one small sequence, such as a hold and its capture) through
the real client library, with its retries, and writes every response and every error to the journal.
The checker (bench/chaos_checker.py) reads only the journal and the database.

To add a workload (a batch RPC, say), write a class with a `name` and a `step(ctx)` that registers each
event it sends with `ctx.journal.sent(...)`, records each answer with `Event.acked(...)` /
`Event.failed(...)` and writes it with `ctx.journal.answered(...)` (the journal file gets one line per
answer as it arrives), and add it to WORKLOADS. The checker needs nothing new as long as every event is
one usage record under one idempotency key.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import grpc
from consofta.billing.client import AsyncBillingClient, BillingError, nanos_of, usage
from consofta.billing.v1 import usage_service_pb2

# Codes after which the client cannot know whether the request was applied.
UNKNOWN_OUTCOME = frozenset(
    (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    )
)
# Codes that are never an answer to a well-formed request, whatever the faults: each is a violation.
SERVER_FAULTS = frozenset((grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN))


@dataclass
class Event:
    """One usage event under one idempotency key, as a client saw it."""

    workload: str
    company_id: str
    key: str
    request: usage_service_pb2.RecordUsageRequest
    hold_id: str = ""
    # "ok": acknowledged; "unknown": no answer the client can trust; "refused": a definite error.
    outcome: str = "pending"
    code: str = ""
    reason: str = ""
    record_id: str = ""
    amount_nanos: int = 0
    balance_after_nanos: int = 0
    replayed: bool = False

    def acked(self, reply: usage_service_pb2.RecordUsageResponse) -> None:
        self.outcome = "ok"
        self.record_id = reply.usage_record.id
        self.amount_nanos = nanos_of(reply.usage_record.price.amount)
        self.balance_after_nanos = nanos_of(reply.balance_after)
        self.replayed = reply.replayed

    def failed(self, error: BillingError) -> None:
        self.failed_with(error.code, error.reason)

    def failed_with(self, code: grpc.StatusCode, reason: str = "") -> None:
        self.code, self.reason = code.name, reason
        self.outcome = "unknown" if code in UNKNOWN_OUTCOME else "refused"

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "company_id": self.company_id,
            "key": self.key,
            "hold_id": self.hold_id,
            "outcome": self.outcome,
            "code": self.code,
            "reason": self.reason,
            "record_id": self.record_id,
            "amount_nanos": self.amount_nanos,
            "balance_after_nanos": self.balance_after_nanos,
            "replayed": self.replayed,
        }


@dataclass
class Journal:
    """Every event sent, every deliberate duplicate's answer, and every anomaly seen by a client."""

    path: Path | None = None
    events: list[Event] = field(default_factory=list)
    # (original event, the duplicate's answer or error): checked against the original.
    duplicates: list[tuple[Event, Event]] = field(default_factory=list)
    # Second captures of a hold that was already captured (must be refused).
    recaptures: list[Event] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    requests: int = 0
    _out: IO[str] | None = field(default=None, repr=False)

    def open(self) -> None:
        """Start the file: from now on every answer is a line, written as it arrives."""
        if self.path is not None:
            self._out = self.path.open("w", buffering=1)

    def note(self, kind: str, **fields: object) -> None:
        if self._out is not None:
            self._out.write(json.dumps({"kind": kind, "at": round(time.time(), 3), **fields}) + "\n")

    def answered(self, kind: str, event: Event) -> None:
        self.note(kind, **event.as_json())

    def anomaly(self, detail: str) -> None:
        self.anomalies.append(detail)
        self.note("anomaly", detail=detail)

    def sent(self, event: Event) -> Event:
        self.events.append(event)
        self.requests += 1
        return event

    def close(self) -> None:
        """After the checker: each event's final outcome (unknown ones resolved), then the file ends."""
        for event in self.events:
            self.answered("final", event)
        if self._out is not None:
            self._out.close()
            self._out = None


@dataclass
class ClientContext:
    """What a workload step gets: its client's connection(s), randomness, wallets and the journal."""

    number: int
    rng: random.Random
    journal: Journal
    # A client to a server that is up (the proxy in front of the primary, or a replica).
    client: Callable[[], AsyncBillingClient]
    wallet: Callable[[], str]
    acked: list[Event] = field(default_factory=list)
    sequence: int = 0

    def key(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}-c{self.number}-{self.sequence}"


class Workload(Protocol):
    name: str

    async def step(self, ctx: ClientContext) -> None: ...


async def _send(ctx: ClientContext, event: Event, kind: str = "event") -> Event:
    try:
        reply = await ctx.client().record_usage(event.request)
    except BillingError as error:
        event.failed(error)
        if error.code in SERVER_FAULTS:
            ctx.journal.anomaly(f"{event.key}: the server answered {error.code.name}: {error.message}")
    else:
        event.acked(reply)
    ctx.journal.answered(kind, event)
    return event


class UnaryRecordUsage:
    """RecordUsage one event at a time: emails and texts with fresh keys, about 5% deliberate duplicates
    of acknowledged events, and about 10% calls captured from a hold (some captured a second time)."""

    name = "unary"

    def __init__(self, duplicate_share: float = 0.05, hold_share: float = 0.10) -> None:
        self.duplicate_share = duplicate_share
        self.hold_share = hold_share

    async def step(self, ctx: ClientContext) -> None:
        roll = ctx.rng.random()
        if roll < self.duplicate_share and ctx.acked:
            await self._duplicate(ctx)
        elif roll < self.duplicate_share + self.hold_share:
            await self._hold_then_capture(ctx)
        else:
            await self._fresh(ctx)

    def _request(
        self, ctx: ClientContext, company: str, key: str, kind: str, hold_id: str = "", **fields: object
    ) -> usage_service_pb2.RecordUsageRequest:
        request = usage_service_pb2.RecordUsageRequest(
            company_id=company, idempotency_key=key, usage=usage(kind, **fields)
        )
        if hold_id:
            request.hold_id = hold_id
        return request

    async def _fresh(self, ctx: ClientContext) -> None:
        company, key = ctx.wallet(), ctx.key(self.name)
        if ctx.rng.random() < 0.7:
            request = self._request(ctx, company, key, "email", count=ctx.rng.randint(1, 1_000))
        else:
            request = self._request(
                ctx, company, key, "sms", direction="outbound", segments=ctx.rng.randint(1, 5)
            )
        event = await _send(ctx, ctx.journal.sent(Event(self.name, company, key, request)))
        if event.outcome == "ok":
            ctx.acked.append(event)

    async def _duplicate(self, ctx: ClientContext) -> None:
        original = ctx.rng.choice(ctx.acked)
        again = await _send(
            ctx, Event(self.name, original.company_id, original.key, original.request), "duplicate"
        )
        ctx.journal.requests += 1
        ctx.journal.duplicates.append((original, again))

    async def _hold_then_capture(self, ctx: ClientContext) -> None:
        company = ctx.wallet()
        hold_key = ctx.key("hold")
        try:
            hold = await ctx.client().authorize_call(
                company, "outbound", "local", 300, idempotency_key=hold_key
            )
        except BillingError as error:
            if error.code in SERVER_FAULTS:
                ctx.journal.anomaly(f"{hold_key}: AuthorizeUsage answered {error.code.name}")
            ctx.journal.note("hold", key=hold_key, company_id=company, code=error.code.name)
            return
        finally:
            ctx.journal.requests += 1
        ctx.journal.note("hold", key=hold_key, company_id=company, hold_id=hold.hold.id, allowed=hold.allowed)
        if not hold.allowed:
            return
        key = ctx.key(self.name)
        seconds = ctx.rng.randint(1, 300)
        request = self._request(
            ctx, company, key, "call", hold.hold.id, direction="outbound", number_type="local",
            duration_seconds=seconds,
        )  # fmt: skip
        event = await _send(ctx, ctx.journal.sent(Event(self.name, company, key, request, hold.hold.id)))
        if event.outcome == "ok":
            ctx.acked.append(event)
            if ctx.rng.random() < 0.2:
                # A second capture of the same hold under a new key must be refused.
                second_key = ctx.key("recapture")
                second = self._request(
                    ctx, company, second_key, "call", hold.hold.id, direction="outbound",
                    number_type="local", duration_seconds=seconds,
                )  # fmt: skip
                recapture = await _send(
                    ctx, Event("recapture", company, second_key, second, hold.hold.id), "recapture"
                )
                ctx.journal.requests += 1
                ctx.journal.recaptures.append(recapture)


# The batch RPC, where the contract has it: up to 1,000 RecordUsage requests in one call, one result each.
_BATCH_REQUEST: Any = getattr(usage_service_pb2, "RecordUsageBatchRequest", None)
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class BatchRecordUsage:
    """RecordUsageBatch: 2 to `max_items` events per call with fresh keys, about 5% of items repeating an
    acknowledged event. Each item is an event of its own for the checker, acknowledged by its result."""

    name = "batch"

    def __init__(self, max_items: int = 20, duplicate_share: float = 0.05) -> None:
        self.max_items = max_items
        self.duplicate_share = duplicate_share
        self._single = UnaryRecordUsage()

    async def step(self, ctx: ClientContext) -> None:
        fresh: list[Event] = []
        repeats: list[tuple[Event, Event]] = []
        for _ in range(ctx.rng.randint(2, self.max_items)):
            if ctx.acked and ctx.rng.random() < self.duplicate_share:
                original = ctx.rng.choice(ctx.acked)
                again = Event(self.name, original.company_id, original.key, original.request)
                repeats.append((original, again))
                continue
            company, key = ctx.wallet(), ctx.key(self.name)
            request = self._single._request(ctx, company, key, "email", count=ctx.rng.randint(1, 1_000))
            fresh.append(ctx.journal.sent(Event(self.name, company, key, request)))
        items = fresh + [again for _, again in repeats]
        client = ctx.client()
        try:
            reply = await client.call(
                getattr(client.usage, "RecordUsageBatch"),  # noqa: B009 - not in every contract version
                _BATCH_REQUEST(items=[event.request for event in items]),
            )
        except BillingError as error:
            if error.code in SERVER_FAULTS:
                ctx.journal.anomaly(f"batch of {len(items)}: answered {error.code.name}: {error.message}")
            for event in items:
                event.failed(error)
        else:
            if len(reply.results) != len(items):
                ctx.journal.anomaly(f"batch of {len(items)} answered {len(reply.results)} results")
            for event, result in zip(items, reply.results, strict=False):
                if result.HasField("recorded"):
                    event.acked(result.recorded)
                else:
                    code = _CODES_BY_NUMBER.get(result.error.code, grpc.StatusCode.UNKNOWN)
                    event.failed_with(code, result.error.message[:80])
                    if code in SERVER_FAULTS:
                        ctx.journal.anomaly(f"{event.key}: batch item answered {code.name}")
        for event in fresh:
            ctx.journal.answered("event", event)
            if event.outcome == "ok":
                ctx.acked.append(event)
        for original, again in repeats:
            ctx.journal.requests += 1
            ctx.journal.answered("duplicate", again)
            ctx.journal.duplicates.append((original, again))


WorkloadFactory = Callable[[], Workload]
WORKLOADS: dict[str, WorkloadFactory] = {"unary": UnaryRecordUsage}
if _BATCH_REQUEST is not None:
    WORKLOADS["batch"] = BatchRecordUsage

RunStep = Callable[[ClientContext], Awaitable[None]]
