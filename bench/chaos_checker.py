"""The fault harness's checker, in the style of Jepsen's bank test: after the load, from the database
and the journal only.

1. Every unknown outcome is first counted in the database (there once, or not at all, never twice),
   then resolved by replaying its request under the same key against a healthy server.
2. Every acknowledged event is in usage_records under its key, with the acknowledged record id, and has
   exactly one ledger entry; none is lost, none applied twice; no record exists that no client sent.
3. Every deliberate duplicate, and a replay of every acknowledged event, answers `replayed` with the same
   record id, amount and balance after.
4. Each balance equals the sum of its ledger and each chain of sequences is continuous.
5. Each hold is captured at most once; a second capture was refused.
6. Each recharge attempt has at most one PaymentIntent at the (fake) Stripe and at most one credit, and
   each wallet's recharge credits equal its succeeded charges there, to the cent.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import asyncpg
from consofta.billing.client import AsyncBillingClient, BillingError

from bench.chaos_workloads import Event, Journal
from tests.support.fake_stripe import FakeStripe
from tests.support.ledger import ledger_violations

NANOS_PER_CENT = 10_000_000
REPLAYS_IN_FLIGHT = 16
ATTEMPT_METADATA_KEY = "recharge_attempt_id"


@dataclass
class Verdict:
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    unknown: int = 0
    unknown_applied: int = 0
    unknown_resolved: int = 0
    replays_checked: int = 0
    holds_captured: int = 0
    recaptures_refused: int = 0
    recharge_attempts: int = 0
    recharge_credits: int = 0
    charges_succeeded: int = 0
    violations: list[str] = field(default_factory=list)

    def violation(self, text: str) -> None:
        self.violations.append(text)


def _same(first: Event, again: Event) -> str | None:
    """What differs between an acknowledged event and a replay of it, or None."""
    if again.outcome != "ok":
        return f"answered {again.code} {again.reason}"
    if not again.replayed:
        return "was applied again (replayed = false)"
    for name in ("record_id", "amount_nanos", "balance_after_nanos"):
        if getattr(first, name) != getattr(again, name):
            return f"{name} {getattr(first, name)} != {getattr(again, name)}"
    return None


async def _replay(client: AsyncBillingClient, event: Event) -> Event:
    again = Event(event.workload, event.company_id, event.key, event.request, event.hold_id)
    try:
        again.acked(await client.record_usage(event.request, timeout_s=30))
    except BillingError as error:
        again.failed(error)
    return again


async def check(
    journal: Journal,
    conn: asyncpg.Connection,
    client: AsyncBillingClient,
    fake: FakeStripe | None,
    *,
    replay_limit: int = 100_000,
) -> Verdict:
    verdict = Verdict()
    events = [e for e in journal.events if e.outcome in ("ok", "unknown")]
    acked = [e for e in events if e.outcome == "ok"]
    verdict.acknowledged = len(acked)
    verdict.violations.extend(journal.anomalies)
    # A well-formed usage is never refused, whatever the faults (the balance may go below zero).
    verdict.violations.extend(
        f"{e.key} was refused: {e.code} {e.reason}" for e in journal.events if e.outcome == "refused"
    )

    async def records() -> dict[tuple[str, str], asyncpg.Record]:
        rows = await conn.fetch("select company_id, idempotency_key, usage_record_id from usage_records")
        return {(r["company_id"], r["idempotency_key"]): r for r in rows}

    # 1. Unknown outcomes: at most once now, exactly once after a replay under the same key.
    before = await records()
    for event in (e for e in events if e.outcome == "unknown"):
        verdict.unknown += 1
        was_there = (event.company_id, event.key) in before
        verdict.unknown_applied += was_there
        again = await _replay(client, event)
        if again.outcome != "ok":
            verdict.violation(
                f"unknown outcome {event.key} could not be resolved: {again.code} {again.reason}"
            )
            continue
        if again.replayed != was_there:
            verdict.violation(
                f"unknown outcome {event.key}: in the database before the replay: {was_there}, "
                f"replayed: {again.replayed}"
            )
            continue
        verdict.unknown_resolved += 1
        event.outcome, event.record_id = "ok", again.record_id
        event.amount_nanos, event.balance_after_nanos = again.amount_nanos, again.balance_after_nanos

    # 2. Acknowledged events against the database.
    after = await records()
    entries = Counter(
        r["usage_record_id"]
        for r in await conn.fetch(
            "select usage_record_id from ledger_entries where usage_record_id is not null"
        )
    )
    sent: set[tuple[str, str]] = set()
    for event in events:
        if event.outcome != "ok":
            continue
        sent.add((event.company_id, event.key))
        row = after.get((event.company_id, event.key))
        if row is None:
            verdict.lost += 1
            verdict.violation(f"acknowledged {event.key} ({event.company_id}) is not in usage_records")
            continue
        if str(row["usage_record_id"]) != event.record_id:
            verdict.violation(
                f"{event.key}: acknowledged record {event.record_id}, stored {row['usage_record_id']}"
            )
        count = entries.get(row["usage_record_id"], 0)
        if count == 0:
            verdict.lost += 1
            verdict.violation(f"{event.key}: record {event.record_id} has no ledger entry")
        elif count > 1:
            verdict.duplicated += 1
            verdict.violation(f"{event.key}: record {event.record_id} has {count} ledger entries")
    refused_keys = {(e.company_id, e.key) for e in journal.events if e.outcome == "refused"}
    for company_key in after.keys() - sent:
        if company_key in refused_keys:
            verdict.violation(f"refused {company_key} was applied anyway")
        elif not company_key[1].startswith("recapture-"):
            verdict.violation(f"usage record {company_key} was never sent by a client")
    per_key = await conn.fetch(
        "select company_id, idempotency_key, count(*) as n from usage_records"
        " group by 1, 2 having count(*) > 1"
    )
    verdict.duplicated += len(per_key)
    verdict.violations.extend(f"key applied {r['n']} times: {tuple(r)[:2]}" for r in per_key)

    # 3. Replays: the deliberate duplicates, then a replay of each acknowledged event.
    for original, again in journal.duplicates:
        if again.outcome == "unknown":
            continue  # the duplicate itself was lost in a fault; the replay below covers the key
        problem = _same(original, again)
        if problem is not None:
            verdict.violation(f"duplicate of {original.key} {problem}")
    limit = asyncio.Semaphore(REPLAYS_IN_FLIGHT)

    async def replay(event: Event) -> None:
        async with limit:
            problem = _same(event, await _replay(client, event))
        verdict.replays_checked += 1
        if problem is not None:
            verdict.violation(f"replay of {event.key} {problem}")

    await asyncio.gather(*(replay(e) for e in [e for e in events if e.outcome == "ok"][:replay_limit]))

    # 4. The ledger.
    verdict.violations.extend(await ledger_violations(conn))

    # 5. Holds: a captured hold has one record; a second capture was refused.
    holds = await conn.fetch("select hold_id, usage_record_id from holds where state = 'captured'")
    verdict.holds_captured = len(holds)
    by_record = Counter(r["usage_record_id"] for r in holds)
    verdict.violations.extend(f"record {rid} captured {n} holds" for rid, n in by_record.items() if n > 1)
    captured = {str(r["hold_id"]): str(r["usage_record_id"]) for r in holds}
    for event in events:
        if event.outcome == "ok" and event.hold_id and captured.get(event.hold_id) != event.record_id:
            verdict.violation(f"hold {event.hold_id} of {event.key} is not captured by its record")
    for recapture in journal.recaptures:
        if recapture.outcome == "ok" and not recapture.replayed:
            verdict.violation(f"hold {recapture.hold_id} was captured a second time by {recapture.key}")
        elif recapture.outcome == "refused" and recapture.reason == "HOLD_ALREADY_CAPTURED":
            verdict.recaptures_refused += 1
        elif recapture.outcome == "refused":
            verdict.violation(
                f"second capture {recapture.key} refused with {recapture.code} {recapture.reason}"
            )

    # 6. Recharges against the fake Stripe's own records.
    attempts = await conn.fetch(
        "select attempt_id, company_id, provider_customer_id, status, payment_intent_id"
        " from recharge_attempts"
    )
    verdict.recharge_attempts = len(attempts)
    credits = await conn.fetch(
        "select company_id, recharge_attempt_id, amount_nanos from ledger_entries "
        "where recharge_attempt_id is not null"
    )
    verdict.recharge_credits = len(credits)
    per_attempt = Counter(r["recharge_attempt_id"] for r in credits)
    verdict.violations.extend(f"attempt {a} credited {n} times" for a, n in per_attempt.items() if n > 1)
    if fake is not None:
        intents_per_attempt: Counter[str] = Counter()
        charged: defaultdict[str, int] = defaultdict(int)
        for intent in fake.payment_intents.values():
            attempt = (intent.get("metadata") or {}).get(ATTEMPT_METADATA_KEY)
            if attempt is not None:
                intents_per_attempt[attempt] += 1
            if intent.get("status") == "succeeded":
                verdict.charges_succeeded += 1
                charged[str(intent.get("customer"))] += int(intent["amount"]) * NANOS_PER_CENT
        verdict.violations.extend(
            f"attempt {a} has {n} PaymentIntents" for a, n in intents_per_attempt.items() if n > 1
        )
        customer_of = {r["company_id"]: r["provider_customer_id"] for r in attempts}
        credited: defaultdict[str, int] = defaultdict(int)
        for row in credits:
            credited[customer_of.get(row["company_id"], "?")] += row["amount_nanos"]
        for customer in charged.keys() | credited.keys():
            if charged[customer] != credited[customer]:
                verdict.violation(
                    f"customer {customer}: charged {charged[customer]} nanos at Stripe, "
                    f"credited {credited[customer]}"
                )
    return verdict
