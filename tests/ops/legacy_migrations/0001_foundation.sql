-- 0001: companies, wallets, the append-only ledger, rate cards and usage records.
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

create table wallets (
    company_id            text primary key references companies (company_id),
    currency_code         text not null default 'USD' check (currency_code = 'USD'),
    balance_nanos         bigint not null default 0,
    -- Sequence of the newest ledger entry; the next entry gets last_sequence + 1 under this row's lock.
    last_sequence         bigint not null default 0 check (last_sequence >= 0),
    minimum_balance_nanos bigint not null default 0 check (minimum_balance_nanos >= 0),
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now()
);

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
    primary key (company_id, sequence),
    check (balance_after_nanos = balance_before_nanos + amount_nanos),
    check (entry_type <> 'usage_debit' or (amount_nanos <= 0 and usage_record_id is not null)),
    check (entry_type not in ('recharge_credit', 'preload_credit', 'manual_credit') or amount_nanos > 0)
);

-- The ledger is append-only, enforced by the database itself rather than by convention.
create function reject_ledger_mutation() returns trigger
language plpgsql as $$
begin
    raise exception '% on % is not allowed: the table is append-only', tg_op, tg_table_name
        using errcode = 'BL001';
end
$$;

create trigger ledger_entries_append_only before update or delete on ledger_entries
    for each row execute function reject_ledger_mutation();
create trigger ledger_entries_no_truncate before truncate on ledger_entries
    for each statement execute function reject_ledger_mutation();

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

create trigger rate_cards_immutable before update or delete on rate_cards
    for each row execute function reject_ledger_mutation();
create trigger rate_card_rates_immutable before update or delete on rate_card_rates
    for each row execute function reject_ledger_mutation();

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

-- The unit price for one rate key at one moment: the company's newest card version in effect at p_at
-- if it lists the key, else the default card's newest version in effect then.
create function effective_rate(p_company_id text, p_rate_key text, p_at timestamptz,
                               out unit_price_nanos bigint, out rate_card text, out rate_card_version integer)
language sql stable as $$
    select r.unit_price_nanos, coalesce(c.company_id, 'default'), c.version
    from rate_cards c
    join rate_card_rates r on r.rate_card_id = c.rate_card_id and r.rate_key = p_rate_key
    where c.rate_card_id in (
        (select rate_card_id from rate_cards
          where company_id = p_company_id and effective_from <= p_at
          order by effective_from desc limit 1),
        (select rate_card_id from rate_cards
          where company_id is null and effective_from <= p_at
          order by effective_from desc limit 1))
    order by c.company_id nulls last
    limit 1
$$;

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

-- RecordUsage's whole transaction in one round trip: claim the key, price, lock the wallet, debit it,
-- append the ledger entry, store the record. Returns the stored record; when its usage_record_id is not
-- the one proposed, the key had been used before and the caller compares request_hash.
create function record_usage(
    p_usage_record_id uuid, p_company_id text, p_idempotency_key text, p_request_hash bytea,
    p_usage_type text, p_rate_key text, p_direction text, p_number_type text, p_quantity bigint,
    p_sms_encoding text, p_billable_units bigint, p_occurred_at timestamptz)
returns usage_records
language plpgsql as $$
declare
    v_record  usage_records;
    v_rate    record;
    v_wallet  record;
    v_amount  bigint;
    v_after   bigint;
begin
    -- Fast path for retries of committed requests: no wallet lock needed.
    select * into v_record from usage_records
     where company_id = p_company_id and idempotency_key = p_idempotency_key;
    if found then
        return v_record;
    end if;

    -- Priced before taking the lock, to keep the lock short.
    select * into v_rate from effective_rate(p_company_id, p_rate_key, p_occurred_at);

    select balance_nanos, last_sequence, minimum_balance_nanos into v_wallet
      from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;

    -- Under the lock, a concurrent request with the same key has either committed (seen here, since
    -- each statement takes a fresh snapshot) or not started its debit.
    select * into v_record from usage_records
     where company_id = p_company_id and idempotency_key = p_idempotency_key;
    if found then
        return v_record;
    end if;

    if v_rate.unit_price_nanos is null then
        raise exception 'no rate card has a % rate in effect at %', p_rate_key, p_occurred_at
            using errcode = 'BL412';
    end if;

    v_amount := p_billable_units * v_rate.unit_price_nanos;
    v_after := v_wallet.balance_nanos - v_amount;

    update wallets
       set balance_nanos = v_after, last_sequence = v_wallet.last_sequence + 1, updated_at = now()
     where company_id = p_company_id;

    insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                balance_after_nanos, usage_record_id)
    values (p_company_id, v_wallet.last_sequence + 1, 'usage_debit', -v_amount, v_wallet.balance_nanos,
            v_after, p_usage_record_id);

    insert into usage_records (usage_record_id, company_id, idempotency_key, request_hash, usage_type,
                               rate_key, direction, number_type, quantity, sms_encoding, billable_units,
                               unit_price_nanos, amount_nanos, rate_card, rate_card_version, occurred_at,
                               ledger_sequence, balance_after_nanos, below_minimum)
    values (p_usage_record_id, p_company_id, p_idempotency_key, p_request_hash, p_usage_type, p_rate_key,
            p_direction, p_number_type, p_quantity, p_sms_encoding, p_billable_units,
            v_rate.unit_price_nanos, v_amount, v_rate.rate_card, v_rate.rate_card_version, p_occurred_at,
            v_wallet.last_sequence + 1, v_after, v_after < v_wallet.minimum_balance_nanos)
    returning * into v_record;
    return v_record;
end
$$;
