-- 0002: billing settings, their audit trail, and the card on file (Stripe customer + payment method).
-- The minimum balance itself stays on wallets.minimum_balance_nanos, where RecordUsage reads it under the
-- wallet lock it already holds; every other setting lives here.

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
    updated_at                  timestamptz not null default now()
);

insert into billing_settings (company_id) select company_id from companies;

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
create trigger settings_changes_append_only before update or delete on settings_changes
    for each row execute function reject_ledger_mutation();

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
