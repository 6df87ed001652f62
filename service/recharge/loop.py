"""The recharge loop: wakes on NOTIFY, sweeps periodically, claims attempts and calls the provider.

One loop per process; any number of processes may run against one database. Each pass:

1. plan: for every company woken by ``wallet_below_minimum`` / ``recharge_wanted`` (or found by the
   periodic sweep), ``planning.plan_recharge`` decides under the wallet lock and commits an attempt;
2. work: ``attempts.claim_due`` leases due attempts (``FOR UPDATE SKIP LOCKED``) and each one runs in its
   own task: one provider call, then ``outcomes.record_outcome`` in a new transaction.

Reconciliation is the same claim: an attempt left pending or processing by a crash becomes claimable
when its lease expires, and is then retried with the same idempotency key while the provider still
remembers it, or looked up by its metadata after that (never charged again blind).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass

import asyncpg
import structlog

from service.config import Config, RechargeCeilings
from service.db.listener import Listener
from service.payments.provider import (
    ChargeResult,
    ChargeStatus,
    CredentialsRejected,
    IdempotencyConflict,
    OutcomeUnknown,
    PaymentProvider,
    PaymentProviderError,
)

from . import engine, fallback, transitions
from .attempts import (
    ATTEMPT_METADATA_KEY,
    Attempt,
    claim_due,
    idempotency_key,
    next_due_in_s,
    note_call,
)
from .crash import crash_point
from .outcomes import Backoff, outcome_of, record_outcome
from .planning import plan_recharge, sweep_candidates
from .transitions import Outcome, Status

log = structlog.get_logger(__name__)

CHANNELS = ("wallet_below_minimum", "recharge_wanted")


@dataclass(frozen=True)
class LoopSettings:
    sweep_interval_s: float
    lease_s: float
    backoff: Backoff
    # Attempts one process works on at once.
    max_concurrency: int = 16
    # The deployment's limits on automatic charges.
    ceilings: RechargeCeilings = engine.DEFAULT_CEILINGS

    @classmethod
    def from_config(cls, config: Config) -> LoopSettings:
        return cls(
            sweep_interval_s=config.recharge_sweep_interval_s,
            lease_s=config.recharge_lease_s,
            backoff=Backoff(config.recharge_retry_backoff_s, config.recharge_unknown_retry_backoff_s),
            ceilings=config.recharge_ceilings,
        )

    @property
    def call_timeout_s(self) -> float:
        # A provider call must end well inside the lease, or another process could take the attempt
        # while this one still waits (harmless thanks to the key, but wasteful).
        return self.lease_s * 0.8


class RechargeLoop:
    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: PaymentProvider,
        database_url: str,
        settings: LoopSettings,
        *,
        owner: str | None = None,
    ) -> None:
        self._pool = pool
        self._provider = provider
        self._settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wanted: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._listener = Listener(
            database_url,
            CHANNELS,
            self._on_notify,
            self._on_reconnect,
            application_name="consofta-billing-recharge-listen",
        )
        self._main: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._next_sweep = 0.0

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._listener.start()
        self._main = asyncio.create_task(self._run(), name="recharge-loop")
        log.info("recharge loop started", owner=self.owner)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Take no new work; let attempts in progress finish for up to grace_s, then cancel them.

        A cancelled attempt is not lost: it stays pending under a lease that expires, and the next
        process retries it with the same idempotency key.
        """
        self._stopping = True
        self._wake.set()
        if self._main is not None:
            await asyncio.gather(self._main, return_exceptions=True)
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._listener.close()
        log.info("recharge loop stopped", owner=self.owner)

    def wake(self, company_id: str | None = None) -> None:
        """Ask for a plan pass now (e.g. after a webhook settled an attempt)."""
        if company_id is not None:
            self._wanted.add(company_id)
        self._wake.set()

    # ---- notifications ---------------------------------------------------------------------------

    def _on_notify(self, _channel: str, payload: str) -> None:
        if payload:
            self._wanted.add(payload)
        self._wake.set()

    def _on_reconnect(self) -> None:
        # Notifications sent while the listener was down are lost: sweep now instead.
        self._next_sweep = 0.0
        self._wake.set()

    # ---- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before the pass: a wake-up during the pass makes the wait below return at once.
            self._wake.clear()
            try:
                await self._pass()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("recharge loop pass failed; retrying", error=str(e))
                await asyncio.sleep(1.0)
                continue
            timeout = await self._idle_timeout()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _pass(self) -> None:
        companies: set[str] = set()
        if time.monotonic() >= self._next_sweep:
            companies.update(await sweep_candidates(self._pool))
            self._next_sweep = time.monotonic() + self._settings.sweep_interval_s
        companies.update(self._wanted)
        self._wanted.clear()
        for company_id in sorted(companies):
            if self._stopping:
                return
            await self._plan(company_id)
        await self._claim()

    async def _plan(self, company_id: str) -> None:
        try:
            async with self._pool.acquire() as conn:
                planned = await plan_recharge(conn, company_id, self._settings.ceilings)
        except asyncpg.UniqueViolationError:
            return  # another process created the in-flight attempt first: nothing to do
        if planned.attempt_id is not None:
            crash_point("after_attempt_commit")

    async def _claim(self) -> None:
        room = self._settings.max_concurrency - len(self._workers)
        if room <= 0 or self._stopping:
            return
        for attempt in await claim_due(self._pool, self.owner, self._settings.lease_s, room):
            task = asyncio.create_task(self._work(attempt), name=f"recharge-{attempt.attempt_id}")
            self._workers.add(task)
            task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        self._wake.set()  # room for more work, and maybe a company to plan again

    async def _idle_timeout(self) -> float:
        until_sweep = max(0.0, self._next_sweep - time.monotonic())
        if len(self._workers) >= self._settings.max_concurrency:
            return until_sweep  # a finishing worker wakes us
        try:
            due_in = await next_due_in_s(self._pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            due_in = None
        return until_sweep if due_in is None else min(until_sweep, due_in + 0.01)

    # ---- one attempt -----------------------------------------------------------------------------

    async def _work(self, attempt: Attempt) -> None:
        try:
            if attempt.fallback_of is not None and self._charges(attempt):
                if await self._answered_before_backup_charge(attempt):
                    return
            outcome, result, error = await self._ask_provider(attempt)
            if attempt.fallback_of is not None:
                crash_point("fallback_after_response_before_write")
            crash_point("after_response_before_write")
            recorded = await record_outcome(
                self._pool, attempt.attempt_id, outcome, result, self._settings.backoff, error=error
            )
            if recorded.fallback_attempt_id is not None:
                # The primary's decline and the fallback attempt are committed; the backup not yet charged.
                crash_point("after_fallback_commit")
            if recorded.status.is_final:
                # The balance may still be below the minimum (usage went on meanwhile), or a
                # soft decline / expiry may call for a new attempt later: plan the company again.
                self.wake(recorded.company_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The attempt keeps its lease until it expires, then any process retries it with the
            # same key. Nothing is lost; log loudly.
            log.exception("recharge attempt failed unexpectedly", attempt_id=str(attempt.attempt_id))

    async def _answered_before_backup_charge(self, attempt: Attempt) -> bool:
        """Before a fallback charges the backup card, make sure its primary can never be paid too: a
        PaymentIntent left waiting for 3-D Secure is canceled first (under a key of its own, so a retry
        after a crash gets the same answer). True when that settled the fallback instead: its primary
        was paid after all (it is credited as any late success is, and the backup is not charged), or
        the provider could not say (the fallback is retried later, the backup still not charged)."""
        assert attempt.fallback_of is not None
        async with self._pool.acquire() as conn:
            primary = await fallback.primary_of(conn, attempt)
        paid = primary.status is Status.SUCCEEDED
        if primary.may_still_be_paid:
            assert primary.payment_intent_id is not None
            await note_call(self._pool, attempt.attempt_id)
            try:
                async with asyncio.timeout(self._settings.call_timeout_s):
                    result = await self._provider.cancel_payment_intent(
                        primary.payment_intent_id, fallback.primary_cancel_key(attempt.fallback_of)
                    )
            except (TimeoutError, PaymentProviderError) as e:
                error = f"canceling the primary's PaymentIntent: {e or 'no answer in time'}"
                log.warning("backup charge waits", attempt_id=str(attempt.attempt_id), error=error)
                await record_outcome(
                    self._pool, attempt.attempt_id, Outcome.UNKNOWN, None, self._settings.backoff, error=error
                )
                return True
            if result.status in (ChargeStatus.SUCCEEDED, ChargeStatus.PROCESSING):
                # A success credits the primary now (a status only moves forward); a payment still
                # processing is credited when its success webhook comes.
                await record_outcome(
                    self._pool, attempt.fallback_of, outcome_of(result), result, self._settings.backoff
                )
                paid = True
        if paid:
            await record_outcome(
                self._pool, attempt.attempt_id, Outcome.SUPERSEDED, None, self._settings.backoff
            )
            self.wake(attempt.company_id)
        return paid

    async def _ask_provider(self, attempt: Attempt) -> tuple[Outcome, ChargeResult | None, str | None]:
        """One provider call for the attempt, mapped to an outcome; never raises for provider trouble."""
        await note_call(self._pool, attempt.attempt_id)
        try:
            async with asyncio.timeout(self._settings.call_timeout_s):
                result = await self._call(attempt)
        except TimeoutError:
            return Outcome.UNKNOWN, None, f"no answer within {self._settings.call_timeout_s:.1f}s"
        except OutcomeUnknown as e:
            return Outcome.UNKNOWN, None, str(e)
        except (CredentialsRejected, IdempotencyConflict) as e:
            # Our credentials, or a key sent before with other parameters (whose first request may have
            # charged): an operator's problem, not the company's. Keep the attempt and retry it later
            # with the same key; a configuration error must not pause every company's auto-recharge.
            log.error("payment provider refused a recharge", attempt_id=str(attempt.attempt_id), error=str(e))
            return Outcome.UNKNOWN, None, f"refused: {e}"
        except PaymentProviderError as e:
            if self._charges(attempt):
                # The charge request itself was refused (e.g. its card was detached meanwhile): nothing
                # was charged, and the same request would be refused again. Final, and reported.
                log.warning(
                    "payment provider refused a charge", attempt_id=str(attempt.attempt_id), error=str(e)
                )
                return Outcome.REFUSED, None, f"refused: {e}"
            # A refused look-up says nothing about whether a charge exists: keep the attempt open.
            log.error("payment provider refused a look-up", attempt_id=str(attempt.attempt_id), error=str(e))
            return Outcome.UNKNOWN, None, f"refused: {e}"
        if result is None:
            return Outcome.NOT_FOUND, None, None
        return outcome_of(result), result, None

    @staticmethod
    def _retrieves(attempt: Attempt) -> bool:
        return attempt.status is Status.PROCESSING and attempt.payment_intent_id is not None

    @classmethod
    def _charges(cls, attempt: Attempt) -> bool:
        """Whether this attempt's next call sends the charge itself (rather than a look-up)."""
        return not cls._retrieves(attempt) and transitions.may_retry_same_key(attempt.created_at, attempt.now)

    async def _call(self, attempt: Attempt) -> ChargeResult | None:
        if self._retrieves(attempt):
            assert attempt.payment_intent_id is not None
            return await self._provider.retrieve_payment_intent(attempt.payment_intent_id)
        if self._charges(attempt):
            # First call, or a retry after an unknown outcome or a crash: the same key, so the
            # provider answers with the PaymentIntent the first request created, if it did.
            return await self._provider.charge(
                customer_id=attempt.provider_customer_id,
                payment_method_id=attempt.payment_method_id,
                amount_cents=engine.amount_cents(attempt.amount_nanos),
                idempotency_key=idempotency_key(attempt.attempt_id),
                metadata=attempt.metadata,
                description=attempt.description,
            )
        # The provider may have forgotten the key: find the PaymentIntent by the metadata we set.
        # None means no charge was ever created, and only then may a new attempt be made.
        return await self._provider.find_payment_intent(
            attempt.provider_customer_id, ATTEMPT_METADATA_KEY, str(attempt.attempt_id)
        )
