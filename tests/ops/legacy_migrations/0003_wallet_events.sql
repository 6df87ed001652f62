-- 0003: the wallet event outbox, written in the same transaction as the change it reports.
--
-- Each event has a per-company sequence, assigned under the company's wallet row lock, so a company's
-- events commit in sequence order and a consumer's cursor never skips one. event_id is a global order
-- for consumers of every company's events; txid lets such a consumer hold back events whose
-- transaction may still be overtaken by an older one (see service/app/events.py).

alter table wallets add column last_event_sequence bigint not null default 0 check (last_event_sequence >= 0);

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

create trigger wallet_events_append_only before update or delete on wallet_events
    for each row execute function reject_ledger_mutation();

-- Appends one event for a company and wakes listeners. Takes (or re-takes) the wallet row lock, which
-- orders the company's events; call it inside the transaction that makes the change.
create function emit_wallet_event(p_company_id text, p_event_type text, p_payload jsonb)
returns wallet_events
language plpgsql as $$
declare
    v_event wallet_events;
    v_sequence bigint;
begin
    update wallets set last_event_sequence = last_event_sequence + 1
     where company_id = p_company_id
    returning last_event_sequence into v_sequence;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    insert into wallet_events (company_id, sequence, event_type, payload)
    values (p_company_id, v_sequence, p_event_type, coalesce(p_payload, '{}'::jsonb))
    returning * into v_event;
    -- Delivered at commit, only if the transaction commits.
    perform pg_notify('wallet_events', p_company_id || ':' || v_event.event_id);
    return v_event;
end
$$;

-- record_usage as in 0001, plus: the debit that takes the balance from at-or-above the minimum to below
-- it emits 'balance_below_minimum' and notifies 'wallet_below_minimum' (the recharge loop listens).
create or replace function record_usage(
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
    select * into v_record from usage_records
     where company_id = p_company_id and idempotency_key = p_idempotency_key;
    if found then
        return v_record;
    end if;

    select * into v_rate from effective_rate(p_company_id, p_rate_key, p_occurred_at);

    select balance_nanos, last_sequence, minimum_balance_nanos into v_wallet
      from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;

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

    if v_wallet.balance_nanos >= v_wallet.minimum_balance_nanos and v_after < v_wallet.minimum_balance_nanos then
        perform emit_wallet_event(p_company_id, 'balance_below_minimum', jsonb_build_object(
            'balance_nanos', v_after, 'minimum_balance_nanos', v_wallet.minimum_balance_nanos,
            'usage_record_id', p_usage_record_id, 'ledger_sequence', v_wallet.last_sequence + 1));
        perform pg_notify('wallet_below_minimum', p_company_id);
    end if;
    return v_record;
end
$$;
