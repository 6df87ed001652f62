-- 0001: the baseline schema: tables, constraints, indexes and the seed rate card.
-- Functions and triggers are not here: each lives in its own file under service/sql/, re-applied by the
-- migrator after the numbered migrations (see service/db/migrate.py). A migration never calls them.
-- Released migrations are never edited; later changes go into new numbered files.
--
-- Sharding note: every table below is keyed by company_id and every write path touches one company's
-- rows only (no global balance row), so the data can later be split by company.

create table companies (
    company_id        text primary key
                      check (company_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    display_name      text not null check (length(display_name) <= 200),
    -- CreateWallet is idempotent under this key (AIP-155).
    create_request_id text not null unique,
    created_at        timestamptz not null default now()
);

-- Suspension is a generated column so that every path that changes its inputs (a debit, a credit, a card
-- set or removed, a recharge outcome, a credit-limit change) keeps it exact without calling anything; a
-- trigger (service/sql/wallet_suspension_changed.sql) emits 'wallet_suspended' / 'wallet_reactivated'
-- in the same transaction when it flips.
create table wallets (
    company_id            text primary key references companies (company_id),
    currency_code         text not null default 'USD' check (currency_code = 'USD'),
    balance_nanos         bigint not null default 0,
    -- Sequence of the newest ledger entry; the next entry gets last_sequence + 1 under this row's lock.
    last_sequence         bigint not null default 0 check (last_sequence >= 0),
    minimum_balance_nanos bigint not null default 0 check (minimum_balance_nanos >= 0),
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    -- Sequence of the newest wallet event (wallet_events.sequence), assigned under this row's lock.
    last_event_sequence   bigint not null default 0 check (last_event_sequence >= 0),
    -- The floor an authorization may not take the available balance below is -credit_limit_nanos (0 by
    -- default). Capped at $1,000,000 so a typo cannot open an unbounded line of credit.
    credit_limit_nanos    bigint not null default 0
                          check (credit_limit_nanos between 0 and 1000000000000000),
    has_card              boolean not null default false,
    -- True after a 'recharge_failed' event, false again after 'recharge_succeeded' or a recharge credit.
    last_recharge_failed  boolean not null default false,
    -- When the newest recharge or pre-load credit landed; null when there was none.
    last_recharge_at      timestamptz,
    -- "At or below the floor, and the last recharge failed or there is no card."
    suspended             boolean generated always as (
                              balance_nanos <= -credit_limit_nanos and (not has_card or last_recharge_failed)) stored
);

-- Append-only (service/sql/append_only.sql). Ledger time is non-decreasing along each wallet's sequence
-- (service/sql/ledger_entries_monotonic_time.sql), so "the entries before instant t" is a prefix of the
-- sequence, found with one probe of ledger_entries_by_time.
create table ledger_entries (
    company_id           text not null references wallets (company_id),
    sequence             bigint not null check (sequence > 0),
    entry_type           text not null check (entry_type in (
                             'usage_debit', 'recharge_credit', 'preload_credit', 'manual_credit', 'adjustment')),
    amount_nanos         bigint not null,
    balance_before_nanos bigint not null,
    balance_after_nanos  bigint not null,
    -- What caused the entry: a usage record, or a free-form reference (recharge attempt, credit request).
    usage_record_id      uuid,
    reference            text,
    description          text not null default '',
    created_at           timestamptz not null default now(),
    -- The recharge attempt a recharge or pre-load credit settles (foreign key added below, once
    -- recharge_attempts exists).
    recharge_attempt_id  uuid,
    primary key (company_id, sequence),
    check (balance_after_nanos = balance_before_nanos + amount_nanos),
    check (entry_type <> 'usage_debit' or (amount_nanos <= 0 and usage_record_id is not null)),
    check (entry_type not in ('recharge_credit', 'preload_credit', 'manual_credit') or amount_nanos > 0),
    -- A recharge credit names its PaymentIntent in reference, or the unique index
    -- ledger_entries_one_credit_per_payment_intent could not see it (nulls are distinct).
    constraint ledger_entries_recharge_has_reference
        check (entry_type not in ('recharge_credit', 'preload_credit') or reference is not null)
);

-- "The last entry before t" and "entries in [t1, t2)" for statements and exports: one index probe.
create index ledger_entries_by_time on ledger_entries (company_id, created_at, sequence);

-- Rate cards: versioned and effective-dated. company_id null is the default card; a company's own card
-- overrides the default for the rate keys it lists. Versions are immutable once written, so a version
-- that applied to past usage keeps applying to it.
create table rate_cards (
    rate_card_id   bigint generated always as identity primary key,
    company_id     text references companies (company_id),
    version        integer not null check (version > 0),
    effective_from timestamptz not null,
    created_at     timestamptz not null default now(),
    unique nulls not distinct (company_id, version),
    unique nulls not distinct (company_id, effective_from)
);

create table rate_card_rates (
    rate_card_id     bigint not null references rate_cards (rate_card_id),
    rate_key         text not null check (rate_key in (
                         'email', 'call_outbound_local', 'call_outbound_toll_free', 'call_inbound_local',
                         'call_inbound_toll_free', 'sms_outbound', 'sms_inbound')),
    unit_price_nanos bigint not null check (unit_price_nanos between 0 and 1000000000000),
    primary key (rate_card_id, rate_key)
);

-- The seed's rates as the default card, version 1 (service/domain/pricing.py DEFAULT_RATES_NANOS).
with card as (
    insert into rate_cards (company_id, version, effective_from)
    values (null, 1, '2000-01-01T00:00:00Z')
    returning rate_card_id
)
insert into rate_card_rates (rate_card_id, rate_key, unit_price_nanos)
select rate_card_id, rate_key, unit_price_nanos
from card, (values
    ('email', 675000),
    ('call_outbound_local', 14000000),
    ('call_outbound_toll_free', 14000000),
    ('call_inbound_local', 8500000),
    ('call_inbound_toll_free', 22000000),
    ('sms_outbound', 7900000),
    ('sms_inbound', 7900000)
) as rates (rate_key, unit_price_nanos);

create table usage_records (
    usage_record_id     uuid primary key,
    company_id          text not null references wallets (company_id),
    idempotency_key     text not null check (length(idempotency_key) between 1 and 255),
    -- SHA-256 of the request as the caller sent it (without the key): tells a replay from a reuse.
    request_hash        bytea not null,
    usage_type          text not null check (usage_type in ('email', 'call', 'sms')),
    rate_key            text not null,
    direction           text check (direction in ('outbound', 'inbound')),
    number_type         text check (number_type in ('local', 'toll_free')),
    -- Emails, call seconds or SMS segments, as used (not yet rounded to billable units).
    quantity            bigint not null check (quantity >= 0),
    sms_encoding        text check (sms_encoding in ('gsm7', 'ucs2')),
    billable_units      bigint not null check (billable_units >= 0),
    unit_price_nanos    bigint not null check (unit_price_nanos >= 0),
    amount_nanos        bigint not null check (amount_nanos = billable_units * unit_price_nanos),
    rate_card           text not null,
    rate_card_version   integer not null,
    occurred_at         timestamptz not null,
    recorded_at         timestamptz not null default now(),
    ledger_sequence     bigint not null,
    balance_after_nanos bigint not null,
    below_minimum       boolean not null,
    unique (company_id, idempotency_key),
    foreign key (company_id, ledger_sequence) references ledger_entries (company_id, sequence)
);

-- ListUsageRecords pages through a company's records by (occurred_at, usage_record_id) with keyset
-- tokens, and the usage summary reads the raw records of a straddled bucket by time.
create index usage_records_by_occurrence on usage_records (company_id, occurred_at, usage_record_id);

-- Billing settings. The minimum balance itself stays on wallets.minimum_balance_nanos, where RecordUsage
-- reads it under the wallet lock it already holds; every other setting lives here.
create table billing_settings (
    company_id                  text primary key references companies (company_id),
    -- Charged to the card when the balance drops below the minimum (whole cents).
    recharge_amount_nanos       bigint not null default 50000000000
                                check (recharge_amount_nanos > 0 and recharge_amount_nanos % 10000000 = 0),
    auto_recharge_enabled       boolean not null default false,
    -- Charged once, when the company sets its first card, so the wallet starts funded (whole cents).
    preload_amount_nanos        bigint not null default 50000000000
                                check (preload_amount_nanos >= 0 and preload_amount_nanos % 10000000 = 0),
    -- Optional ceiling on what auto-recharge may charge in one calendar month (UTC), whole cents.
    monthly_recharge_cap_nanos  bigint
                                check (monthly_recharge_cap_nanos is null
                                       or (monthly_recharge_cap_nanos > 0 and monthly_recharge_cap_nanos % 10000000 = 0)),
    -- Why auto-recharge is paused, or null when it is not: e.g. 'no_card', 'card_removed',
    -- 'authentication_required', 'hard_decline', 'soft_decline_retries_exhausted'.
    auto_recharge_paused_reason text,
    -- Set when the first card is stored; the pre-load charge follows from it.
    first_card_set_at           timestamptz,
    updated_at                  timestamptz not null default now(),
    -- Set when recharge_blocked_by_cap was emitted; cleared by the next charge the cap allows in full, so
    -- the company hears about a blocked recharge once, not on every sweep.
    recharge_blocked_by_cap_at  timestamptz,
    -- When auto_recharge_paused_reason was last set by the recharge engine.
    auto_recharge_paused_at     timestamptz
);

-- Who changed which setting, when, from what to what. Append-only.
create table settings_changes (
    change_id   bigint generated always as identity primary key,
    company_id  text not null references companies (company_id),
    actor       text not null,
    request_id  text,
    field       text not null,
    old_value   text,
    new_value   text,
    changed_at  timestamptz not null default now()
);
create index settings_changes_by_company on settings_changes (company_id, change_id desc);

-- One payment-provider customer per company, created once.
create table payment_customers (
    company_id           text primary key references companies (company_id),
    provider_customer_id text not null unique,
    created_at           timestamptz not null default now()
);

-- The card on file. Only what the dashboard shows and the charges need: never a card number.
create table payment_cards (
    company_id        text primary key references companies (company_id),
    payment_method_id text not null,
    brand             text not null,
    last4             text not null check (last4 ~ '^[0-9]{4}$'),
    exp_month         integer not null check (exp_month between 1 and 12),
    exp_year          integer not null check (exp_year between 2000 and 2200),
    fingerprint       text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);

-- The wallet event outbox, written in the same transaction as the change it reports.
--
-- Each event has a per-company sequence, assigned under the company's wallet row lock, so a company's
-- events commit in sequence order and a consumer's cursor never skips one. event_id is a global order
-- for consumers of every company's events; txid lets such a consumer hold back events whose
-- transaction may still be overtaken by an older one (see service/app/events.py).
create table wallet_events (
    event_id    bigint generated always as identity primary key,
    company_id  text not null references wallets (company_id),
    sequence    bigint not null check (sequence > 0),
    event_type  text not null,
    payload     jsonb not null default '{}',
    txid        xid8 not null default pg_current_xact_id(),
    created_at  timestamptz not null default now(),
    unique (company_id, sequence)
);

-- The all-companies event stream reads by transaction id (see service/app/events.py).
create index wallet_events_by_txid on wallet_events (txid, event_id);

-- Holds: funds reserved before a usage happens (telecom online charging). 'expired' is never stored: a
-- hold whose expires_at has passed simply stops counting, computed with now() at read time.
create table holds (
    hold_id           uuid primary key,
    company_id        text not null references wallets (company_id),
    request_id        text not null check (length(request_id) between 1 and 255),
    request_hash      bytea not null,
    usage_type        text not null check (usage_type in ('email', 'call', 'sms')),
    rate_key          text not null,
    billable_units    bigint not null check (billable_units >= 0),
    unit_price_nanos  bigint not null check (unit_price_nanos >= 0),
    amount_nanos      bigint not null check (amount_nanos = billable_units * unit_price_nanos),
    rate_card         text not null,
    rate_card_version integer not null,
    state             text not null default 'active' check (state in ('active', 'released', 'captured')),
    created_at        timestamptz not null default now(),
    expires_at        timestamptz not null,
    released_at       timestamptz,
    captured_at       timestamptz,
    usage_record_id   uuid references usage_records (usage_record_id),
    unique (company_id, request_id),
    check ((state = 'captured') = (captured_at is not null and usage_record_id is not null)),
    check ((state = 'released') = (released_at is not null))
);

-- The active holds of a wallet, found by range on expires_at so expired ones cost nothing to skip.
create index holds_active on holds (company_id, expires_at) include (amount_nanos) where state = 'active';

-- Manual credits from support (CreditWallet), idempotent under (company_id, request_id).
create table wallet_credits (
    company_id          text not null references wallets (company_id),
    request_id          text not null check (length(request_id) between 1 and 255),
    request_hash        bytea not null,
    entry_type          text not null check (entry_type in ('manual_credit', 'adjustment')),
    amount_nanos        bigint not null check (amount_nanos > 0),
    reason              text not null,
    actor               text not null,
    ledger_sequence     bigint not null,
    balance_after_nanos bigint not null,
    created_at          timestamptz not null default now(),
    primary key (company_id, request_id),
    foreign key (company_id, ledger_sequence) references ledger_entries (company_id, sequence)
);

-- Auto-recharge and pre-load charges, charged exactly once (see README, "Auto-recharge").
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

alter table ledger_entries add constraint ledger_entries_recharge_attempt_id_fkey
    foreign key (recharge_attempt_id) references recharge_attempts (attempt_id);
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

-- What GetUsageSummary reads: per company, per 15-minute UTC bucket, per rate key: record count,
-- quantity, billable units and amount, maintained by statement-level triggers on usage_records
-- (service/sql/usage_rollups_apply.sql). A month costs at most 2,976 buckets x 7 rate keys (~21k rows)
-- whether the company had 1,000 or 10 million records in it.
--   Why a rollup rather than a covering index on usage_records (company_id, occurred_at) INCLUDE (...):
-- the index still reads every record (a 1M-record month is an index-only scan plus a 1M-row aggregate,
-- roughly 0.3-1 s on a small machine, and index-only only once the visibility map is set), while the
-- rollup reads ~21k rows.
--   Why 15 minutes rather than an hour: every time zone in use today has an offset that is a whole
-- number of quarter hours (Asia/Kolkata +5:30, Asia/Kathmandu +5:45, Pacific/Chatham +12:45), so every
-- local day and month starts on a bucket boundary. A boundary that does not (a historical local-mean-time
-- offset, or a request range starting at 10:07) is still exact: the summary reads the raw records of the
-- one straddled bucket on each side (see service/app/reporting/summaries.py).
create table usage_rollups (
    company_id     text not null,
    bucket_start   timestamptz not null,
    rate_key       text not null,
    record_count   bigint not null,
    quantity       bigint not null,
    billable_units bigint not null,
    amount_nanos   bigint not null,
    primary key (company_id, bucket_start, rate_key)
);

comment on table usage_rollups is
    'Sums of usage_records per company, 15-minute UTC bucket of occurred_at and rate key; maintained by triggers.';

-- Idempotency for SettingsService mutations (UpdateBillingSettings, StartCardSetup, SetDefaultCard,
-- RemoveCard). The first response for a (company, request id) is kept and returned on a retry; the same
-- request id with a different request is refused.
--
-- `response` is the serialized gRPC response. StartCardSetup stores none: its response holds the
-- SetupIntent's client secret, which is never stored; a retry asks the provider again under the same
-- idempotency key and gets the same SetupIntent back.
create table settings_requests (
    company_id   text not null references companies (company_id),
    request_id   text not null,
    operation    text not null,
    request_hash bytea not null,
    response     bytea,
    created_at   timestamptz not null default now(),
    primary key (company_id, request_id)
);
