-- 0004: wallet status (suspension), credit limit, holds (authorization before usage), manual credits,
-- and record_usage() capturing a named hold.
--
-- Suspension is stored as a generated column so that every path that changes its inputs (a debit, a
-- credit from any issue's code, a card set or removed, a recharge outcome, a credit-limit change) keeps
-- it exact without calling anything; a trigger emits 'wallet_suspended' / 'wallet_reactivated' in the
-- same transaction when it flips.

-- The floor an authorization may not take the available balance below is -credit_limit_nanos (0 by
-- default). Capped at $1,000,000 so a typo cannot open an unbounded line of credit.
alter table wallets
    add column credit_limit_nanos bigint not null default 0
        check (credit_limit_nanos between 0 and 1000000000000000),
    add column has_card boolean not null default false,
    -- True after a 'recharge_failed' event, false again after 'recharge_succeeded' or a recharge credit.
    add column last_recharge_failed boolean not null default false,
    -- When the newest recharge or pre-load credit landed; null when there was none.
    add column last_recharge_at timestamptz;

update wallets w set has_card = exists (select 1 from payment_cards c where c.company_id = w.company_id);
update wallets w set last_recharge_at = (
    select max(created_at) from ledger_entries e
     where e.company_id = w.company_id and e.entry_type in ('recharge_credit', 'preload_credit'));

-- "At or below the floor, and the last recharge failed or there is no card."
alter table wallets add column suspended boolean generated always as (
    balance_nanos <= -credit_limit_nanos and (not has_card or last_recharge_failed)) stored;

create function wallet_suspension_changed() returns trigger
language plpgsql as $$
begin
    perform emit_wallet_event(new.company_id,
        case when new.suspended then 'wallet_suspended' else 'wallet_reactivated' end,
        jsonb_build_object(
            'balance_nanos', new.balance_nanos,
            'floor_nanos', -new.credit_limit_nanos,
            'has_card', new.has_card,
            'last_recharge_failed', new.last_recharge_failed));
    return null;
end
$$;

-- emit_wallet_event updates the same row (last_event_sequence); suspension does not change then, so the
-- WHEN clause keeps this from recursing.
create trigger wallets_suspension_changed after update on wallets
    for each row when (old.suspended is distinct from new.suspended)
    execute function wallet_suspension_changed();

create function note_card_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        update wallets set has_card = true where company_id = new.company_id and not has_card;
    else
        update wallets set has_card = exists (select 1 from payment_cards where company_id = old.company_id)
         where company_id = old.company_id;
    end if;
    return null;
end
$$;

create trigger payment_cards_note_change after insert or delete on payment_cards
    for each row execute function note_card_change();

-- Recharge outcomes arrive as events (issue 5 emits 'recharge_succeeded' / 'recharge_failed' through
-- emit_wallet_event); the wallet remembers the last one for the suspension rule.
create function note_recharge_outcome() returns trigger
language plpgsql as $$
begin
    update wallets set last_recharge_failed = (new.event_type = 'recharge_failed')
     where company_id = new.company_id
       and last_recharge_failed is distinct from (new.event_type = 'recharge_failed');
    return null;
end
$$;

create trigger wallet_events_note_recharge_outcome after insert on wallet_events
    for each row when (new.event_type in ('recharge_succeeded', 'recharge_failed'))
    execute function note_recharge_outcome();

create function note_recharge_credit() returns trigger
language plpgsql as $$
begin
    update wallets set last_recharge_at = new.created_at, last_recharge_failed = false
     where company_id = new.company_id;
    return null;
end
$$;

create trigger ledger_entries_note_recharge after insert on ledger_entries
    for each row when (new.entry_type in ('recharge_credit', 'preload_credit'))
    execute function note_recharge_credit();

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

create function held_nanos(p_company_id text) returns bigint
language sql stable as $$
    select coalesce(sum(amount_nanos), 0)::bigint from holds
     where company_id = p_company_id and state = 'active' and expires_at > now()
$$;

-- AuthorizeUsage in one round trip. Returns the stored hold (replay when hold_id is not the one
-- proposed), or a denial with hold_id null. Denials are not stored: a retry decides again.
create function authorize_usage(
    p_hold_id uuid, p_company_id text, p_request_id text, p_request_hash bytea, p_usage_type text,
    p_rate_key text, p_billable_units bigint, p_ttl interval,
    out hold holds, out denial text, out amount_nanos bigint, out unit_price_nanos bigint,
    out rate_card text, out rate_card_version integer, out available_nanos bigint, out floor_nanos bigint,
    out checked_at timestamptz)
language plpgsql as $$
declare
    v_rate   record;
    v_wallet record;
begin
    checked_at := now();
    select * into hold from holds where company_id = p_company_id and request_id = p_request_id;
    if found then
        select balance_nanos - held_nanos(p_company_id), -credit_limit_nanos into available_nanos, floor_nanos
          from wallets where company_id = p_company_id;
        return;
    end if;
    select * into v_rate from effective_rate(p_company_id, p_rate_key, now());

    -- The wallet lock serializes a company's authorizations: the sum of holds cannot be raced past.
    select balance_nanos, credit_limit_nanos, suspended into v_wallet
      from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    select * into hold from holds where company_id = p_company_id and request_id = p_request_id;
    if found then
        available_nanos := v_wallet.balance_nanos - held_nanos(p_company_id);
        floor_nanos := -v_wallet.credit_limit_nanos;
        return;
    end if;
    if v_rate.unit_price_nanos is null then
        raise exception 'no rate card has a % rate in effect at %', p_rate_key, now() using errcode = 'BL412';
    end if;

    unit_price_nanos := v_rate.unit_price_nanos;
    rate_card := v_rate.rate_card;
    rate_card_version := v_rate.rate_card_version;
    amount_nanos := p_billable_units * v_rate.unit_price_nanos;
    floor_nanos := -v_wallet.credit_limit_nanos;
    available_nanos := v_wallet.balance_nanos - held_nanos(p_company_id);
    hold := null;
    if v_wallet.suspended then
        denial := 'WALLET_SUSPENDED';
        return;
    end if;
    if available_nanos - amount_nanos < floor_nanos then
        denial := 'INSUFFICIENT_FUNDS';
        return;
    end if;
    insert into holds (hold_id, company_id, request_id, request_hash, usage_type, rate_key, billable_units,
                       unit_price_nanos, amount_nanos, rate_card, rate_card_version, expires_at)
    values (p_hold_id, p_company_id, p_request_id, p_request_hash, p_usage_type, p_rate_key,
            p_billable_units, v_rate.unit_price_nanos, p_billable_units * v_rate.unit_price_nanos,
            v_rate.rate_card, v_rate.rate_card_version, now() + p_ttl)
    returning * into hold;
    available_nanos := available_nanos - amount_nanos;
end
$$;

-- ReleaseHold: idempotent (releasing a released or expired hold returns it unchanged). A captured
-- hold cannot be released.
create function release_hold(p_company_id text, p_hold_id uuid) returns holds
language plpgsql as $$
declare
    v_hold holds;
begin
    update holds set state = 'released', released_at = now()
     where hold_id = p_hold_id and company_id = p_company_id and state = 'active' and expires_at > now()
    returning * into v_hold;
    if found then
        return v_hold;
    end if;
    select * into v_hold from holds where hold_id = p_hold_id and company_id = p_company_id;
    if not found then
        raise exception 'hold % not found for company %', p_hold_id, p_company_id using errcode = 'BLH04';
    end if;
    if v_hold.state = 'captured' then
        raise exception 'hold % was captured by usage record %; it cannot be released',
            p_hold_id, v_hold.usage_record_id using errcode = 'BLH09';
    end if;
    return v_hold;
end
$$;

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

create trigger wallet_credits_append_only before update or delete on wallet_credits
    for each row execute function reject_ledger_mutation();

-- CreditWallet in one round trip: lock, append the ledger entry, store the credit, emit the event.
create function credit_wallet(
    p_company_id text, p_request_id text, p_request_hash bytea, p_entry_type text, p_amount_nanos bigint,
    p_reason text, p_actor text, out credit wallet_credits, out replayed boolean)
language plpgsql as $$
declare
    v_wallet record;
    v_after  bigint;
begin
    replayed := true;
    select * into credit from wallet_credits where company_id = p_company_id and request_id = p_request_id;
    if found then
        return;
    end if;
    select balance_nanos, last_sequence into v_wallet from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    select * into credit from wallet_credits where company_id = p_company_id and request_id = p_request_id;
    if found then
        return;
    end if;
    replayed := false;
    v_after := v_wallet.balance_nanos + p_amount_nanos;
    insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                balance_after_nanos, reference, description)
    values (p_company_id, v_wallet.last_sequence + 1, p_entry_type, p_amount_nanos, v_wallet.balance_nanos,
            v_after, 'credit:' || p_request_id, p_reason);
    update wallets
       set balance_nanos = v_after, last_sequence = v_wallet.last_sequence + 1, updated_at = now()
     where company_id = p_company_id;
    insert into wallet_credits (company_id, request_id, request_hash, entry_type, amount_nanos, reason, actor,
                                ledger_sequence, balance_after_nanos)
    values (p_company_id, p_request_id, p_request_hash, p_entry_type, p_amount_nanos, p_reason, p_actor,
            v_wallet.last_sequence + 1, v_after)
    returning * into credit;
    perform emit_wallet_event(p_company_id, 'manual_credit', jsonb_build_object(
        'entry_type', p_entry_type, 'amount_nanos', p_amount_nanos, 'balance_nanos', v_after,
        'ledger_sequence', v_wallet.last_sequence + 1, 'reason', p_reason, 'actor', p_actor,
        'request_id', p_request_id));
end
$$;

-- record_usage as in 0003, plus an optional hold to capture: it must belong to the company and be
-- neither captured nor released (an expired hold may still be captured: the usage happened). The hold
-- is marked captured and the actual amount is debited, whether more or less than was held.
drop function record_usage(uuid, text, text, bytea, text, text, text, text, bigint, text, bigint, timestamptz);

create function record_usage(
    p_usage_record_id uuid, p_company_id text, p_idempotency_key text, p_request_hash bytea,
    p_usage_type text, p_rate_key text, p_direction text, p_number_type text, p_quantity bigint,
    p_sms_encoding text, p_billable_units bigint, p_occurred_at timestamptz, p_hold_id uuid default null)
returns usage_records
language plpgsql as $$
declare
    v_record  usage_records;
    v_rate    record;
    v_wallet  record;
    v_hold    record;
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

    if p_hold_id is not null then
        -- Holds are only changed under the wallet lock held here, so this read is stable.
        select state, usage_record_id into v_hold from holds
         where hold_id = p_hold_id and company_id = p_company_id;
        if not found then
            raise exception 'hold % not found for company %', p_hold_id, p_company_id using errcode = 'BLH04';
        elsif v_hold.state = 'captured' then
            raise exception 'hold % was already captured by usage record %', p_hold_id, v_hold.usage_record_id
                using errcode = 'BLH09';
        elsif v_hold.state = 'released' then
            raise exception 'hold % was released; record the usage without hold_id', p_hold_id
                using errcode = 'BLH10';
        end if;
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

    if p_hold_id is not null then
        update holds set state = 'captured', captured_at = now(), usage_record_id = p_usage_record_id
         where hold_id = p_hold_id;
    end if;

    if v_wallet.balance_nanos >= v_wallet.minimum_balance_nanos and v_after < v_wallet.minimum_balance_nanos then
        perform emit_wallet_event(p_company_id, 'balance_below_minimum', jsonb_build_object(
            'balance_nanos', v_after, 'minimum_balance_nanos', v_wallet.minimum_balance_nanos,
            'usage_record_id', p_usage_record_id, 'ledger_sequence', v_wallet.last_sequence + 1));
        perform pg_notify('wallet_below_minimum', p_company_id);
    end if;
    return v_record;
end
$$;
