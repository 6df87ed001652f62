-- 0005: auto-recharge and pre-load charges, charged exactly once (see README, "Auto-recharge").
--
-- The three guarantees live here, in constraints, not only in code:
--   * an attempt row is committed before the provider is called; its id is the Stripe idempotency key;
--   * at most one attempt per wallet is not final (recharge_attempts_one_in_flight);
--   * a PaymentIntent credits a wallet once, whichever path (synchronous answer, webhook, reconciliation)
--     gets there first (ledger_entries_one_credit_per_payment_intent), and an attempt credits once
--     (ledger_entries_one_credit_per_attempt).

create table recharge_attempts (
    -- Also the basis of the idempotency key sent to the provider ('recharge-' || attempt_id), and the
    -- 'recharge_attempt_id' metadata on the PaymentIntent, by which reconciliation finds it.
    attempt_id        uuid primary key,
    company_id        text not null references wallets (company_id),
    kind              text not null check (kind in ('auto', 'preload')),
    amount_nanos      bigint not null check (amount_nanos > 0 and amount_nanos % 10000000 = 0),
    -- pending: committed, the provider may or may not have seen it (retry with the same key);
    -- processing: the PaymentIntent exists and is not final (webhook or poll settles it);
    -- succeeded: the wallet is credited (same transaction);
    -- requires_action / hard_declined / soft_declined: the charge failed, nothing was taken;
    -- expired: after the idempotency window, the provider has no PaymentIntent for it: nothing was taken.
    status            text not null default 'pending' check (status in (
                          'pending', 'processing', 'succeeded', 'requires_action', 'hard_declined',
                          'soft_declined', 'expired')),
    -- The card and customer charged. Frozen on the attempt so every retry sends the same parameters
    -- under the same idempotency key, even if the company changes its card meanwhile.
    provider_customer_id text not null,
    payment_method_id text not null,
    card_brand        text not null,
    card_last4        text not null,
    -- 0 for the first attempt of a series; n for the n-th new attempt after soft declines.
    retry_number      integer not null default 0 check (retry_number >= 0),
    -- Provider calls made for this attempt (charge, retrieve or lookup), successful or not.
    call_count        integer not null default 0 check (call_count >= 0),
    -- Not final: when to call the provider next. soft_declined: when a new attempt may be made.
    next_attempt_at   timestamptz,
    -- The process working on it, until lease_expires_at; an expired lease may be taken by another.
    lease_owner       text,
    lease_expires_at  timestamptz,
    payment_intent_id text unique,
    decline_code      text,
    decline_message   text,
    -- The last transient failure (network, timeout, 5xx, 409, 429), for operators.
    last_error        text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    settled_at        timestamptz,
    check ((status in ('pending', 'processing')) = (settled_at is null))
);

-- At most one attempt in flight per wallet: a second one could charge the card twice for one need.
create unique index recharge_attempts_one_in_flight on recharge_attempts (company_id)
    where status in ('pending', 'processing');
-- The loop's work queue.
create index recharge_attempts_due on recharge_attempts (next_attempt_at)
    where status in ('pending', 'processing');
-- The decision reads a wallet's latest attempts and what auto-recharge charged this month.
create index recharge_attempts_by_company on recharge_attempts (company_id, kind, created_at desc);

-- The ledger entry of a recharge names the attempt it settles; the PaymentIntent id goes in reference,
-- which a recharge credit must have, or the unique index below could not see it (nulls are distinct).
alter table ledger_entries add column recharge_attempt_id uuid references recharge_attempts (attempt_id);
alter table ledger_entries add constraint ledger_entries_recharge_has_reference
    check (entry_type not in ('recharge_credit', 'preload_credit') or reference is not null) not valid;
create unique index ledger_entries_one_credit_per_payment_intent on ledger_entries (reference)
    where entry_type in ('recharge_credit', 'preload_credit');
create unique index ledger_entries_one_credit_per_attempt on ledger_entries (recharge_attempt_id)
    where recharge_attempt_id is not null;

-- Stripe delivers webhooks at least once; an event id is applied once.
create table stripe_webhook_events (
    event_id          text primary key,
    event_type        text not null,
    payment_intent_id text,
    -- What the event did: 'applied', 'ignored_final' (the attempt had already settled), 'unknown_attempt'.
    outcome           text not null,
    received_at       timestamptz not null default now()
);

-- Set when recharge_blocked_by_cap was emitted; cleared by the next charge the cap allows in full, so
-- the company hears about a blocked recharge once, not on every sweep.
alter table billing_settings add column recharge_blocked_by_cap_at timestamptz;
-- When auto_recharge_paused_reason was last set by the recharge engine.
alter table billing_settings add column auto_recharge_paused_at timestamptz;
