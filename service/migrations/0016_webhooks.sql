-- Outbound webhooks for wallet events (service/webhooks/). Endpoints are deployment-wide (an operator
-- registers them; the optional company filter is a column of their own, not a per-company key), so they
-- are a global table; deliveries are per company and keyed by company_id like every per-company table.
create table webhook_endpoints (
    endpoint_id      text primary key check (endpoint_id ~ '^we_[a-z2-7]{16}$'),
    url              text not null check (length(url) between 1 and 2048),
    -- Empty: every event type.
    event_types      text[] not null default '{}',
    -- Null: every company.
    company_filter   text,
    description      text not null default '' check (length(description) <= 200),
    -- The signing secret: the deliverer needs it to sign, so it is kept; it is returned only once, by
    -- the call that created the endpoint, and never logged.
    signing_secret   text not null check (signing_secret ~ '^whsec_[A-Za-z0-9_-]{43}$'),
    created_at       timestamptz not null default now(),
    created_by       text not null,
    disabled_at      timestamptz,
    disabled_by      text
);

-- How far the fan-out has read each company's events (wallet_events.sequence): per company, so a
-- company's new events are fanned out on its own notification, never waiting for other transactions.
create table webhook_fanout_cursors (
    company_id  text primary key references wallets (company_id),
    sequence    bigint not null default 0 check (sequence >= 0)
);

-- One row per (endpoint, event): the delivery state. 'pending' is claimed by a deliverer with FOR
-- UPDATE SKIP LOCKED and a lease; it ends 'succeeded', or 'failed' once its retries are over.
create table webhook_deliveries (
    company_id       text not null,
    delivery_id      bigint generated always as identity,
    endpoint_id      text not null references webhook_endpoints (endpoint_id),
    event_id         bigint not null,
    event_sequence   bigint not null check (event_sequence > 0),
    state            text not null default 'pending' check (state in ('pending', 'succeeded', 'failed')),
    attempts         integer not null default 0 check (attempts >= 0),
    next_attempt_at  timestamptz not null default now(),
    lease_until      timestamptz,
    leased_by        text,
    last_status      integer,
    last_error       text,
    created_at       timestamptz not null default now(),
    -- When the retries give up: created_at + the deployment's retry window, reset by a redelivery.
    give_up_at       timestamptz not null,
    finished_at      timestamptz,
    primary key (company_id, delivery_id),
    unique (company_id, endpoint_id, event_id)
);

-- The claim: due pending deliveries of one endpoint, and per company the oldest unfinished one.
create index webhook_deliveries_pending on webhook_deliveries (endpoint_id, next_attempt_at)
    where state = 'pending';
create index webhook_deliveries_order on webhook_deliveries (endpoint_id, company_id, event_sequence)
    where state = 'pending';
create index webhook_deliveries_by_id on webhook_deliveries (delivery_id);
create index webhook_deliveries_by_state on webhook_deliveries (state, created_at);
