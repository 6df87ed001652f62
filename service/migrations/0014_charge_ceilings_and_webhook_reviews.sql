-- Webhook events that did not match the recharge attempt they named (another customer, currency,
-- amount, PaymentIntent or mode than the attempt's): nothing was credited, and a person looks at each.
create table stripe_webhook_reviews (
    event_id          text primary key references stripe_webhook_events (event_id),
    event_type        text not null,
    payment_intent_id text,
    attempt_id        uuid not null references recharge_attempts (attempt_id),
    company_id        text not null references companies (company_id),
    -- What did not match: 'customer', 'currency', 'amount', 'payment_intent', 'attempt_metadata',
    -- 'livemode', 'event_livemode', 'payment_intent_not_found'.
    reasons           text[] not null check (cardinality(reasons) > 0),
    -- What the event, the PaymentIntent fetched with our key and the attempt said.
    details           jsonb not null,
    received_at       timestamptz not null default now(),
    -- Set by the person who looked at it.
    resolved_at       timestamptz,
    resolution        text
);
create index stripe_webhook_reviews_open on stripe_webhook_reviews (received_at) where resolved_at is null;

-- New companies start with a monthly cap ($5,000.00); raising it takes a settings change.
alter table billing_settings alter column monthly_recharge_cap_nanos set default 5000000000000;
-- Set when a deployment ceiling (per charge, per day) cut or held back a recharge and the company was
-- told (wallet event recharge_limited); cleared by the next charge no ceiling limits.
alter table billing_settings add column recharge_limited_at timestamptz;

-- The company's SetupIntent that is still waiting for a card: StartCardSetup hands it out again rather
-- than making a new one per request. The generation is part of the idempotency key of the next one made,
-- so concurrent first requests make one; it moves on when a card is set (that SetupIntent is spent).
alter table payment_customers add column open_setup_intent_id text;
alter table payment_customers add column setup_generation integer not null default 0;
