-- One idempotency mechanism off the hot path (service/app/idempotency.py): every mutation but RecordUsage
-- claims its (company, request id) here, in its own transaction; the first request's result is kept.
create table idempotency_keys (
    company_id   text not null,
    request_id   text not null check (length(request_id) between 1 and 255),
    operation    text not null,
    request_hash bytea not null,
    -- The domain result a replay returns (JSON), for operations that keep one.
    result       jsonb,
    created_at   timestamptz not null default now(),
    primary key (company_id, request_id)
);

insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, request_id, 'credit_wallet', request_hash, created_at from wallet_credits;
insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, request_id, 'authorize_usage', request_hash, created_at from holds;
insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, request_id, operation, request_hash, created_at from settings_requests
    on conflict do nothing;
insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, create_request_id, 'create_wallet',
       -- idempotency.fingerprint(company_id, display_name): length-tagged parts, SHA-256.
       sha256(convert_to(octet_length(convert_to(company_id, 'UTF8')) || ':' || company_id
                         || octet_length(convert_to(display_name, 'UTF8')) || ':' || display_name, 'UTF8')),
       created_at
  from companies
    on conflict do nothing;

drop table settings_requests;
drop function credit_wallet(text, text, bytea, text, bigint, text, text);
drop function authorize_usage(uuid, text, text, bytea, text, text, bigint, interval);
alter table wallet_credits drop column request_hash;
alter table holds drop column request_hash;

-- Claims (company, request id) for an operation in the caller's transaction, or returns the earlier
-- claim (claimed = false) for the caller to compare. A concurrent claim of the same key waits for the
-- first transaction and then sees its row (or takes the key if that one rolled back).
create function claim_idempotency_key(
    p_company_id text, p_request_id text, p_operation text, p_request_hash bytea,
    out claimed boolean, out operation text, out request_hash bytea, out result jsonb)
language plpgsql as $$
begin
    insert into idempotency_keys (company_id, request_id, operation, request_hash)
    values (p_company_id, p_request_id, p_operation, p_request_hash)
    on conflict (company_id, request_id) do nothing;
    claimed := found;
    select k.operation, k.request_hash, k.result into operation, request_hash, result
      from idempotency_keys k where k.company_id = p_company_id and k.request_id = p_request_id;
end
$$;

-- CreditWallet in one round trip: claim the request id, lock, append the ledger entry, store the credit,
-- emit the event. On a replay the stored credit comes back with the claim, for the caller to compare.
create function credit_wallet(
    p_company_id text, p_request_id text, p_request_hash bytea, p_entry_type text, p_amount_nanos bigint,
    p_reason text, p_actor text,
    out credit wallet_credits, out replayed boolean, out claimed_operation text, out claimed_hash bytea)
language plpgsql as $$
declare
    v_claim record;
    v_entry ledger_entries;
begin
    select * into v_claim from claim_idempotency_key(p_company_id => p_company_id, p_request_id => p_request_id,
        p_operation => 'credit_wallet', p_request_hash => p_request_hash);
    replayed := not v_claim.claimed;
    claimed_operation := v_claim.operation;
    claimed_hash := v_claim.request_hash;
    if replayed then
        select * into credit from wallet_credits where company_id = p_company_id and request_id = p_request_id;
        return;
    end if;
    perform 1 from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    v_entry := append_ledger_entry(p_company_id, p_entry_type, p_amount_nanos, 'credit:' || p_request_id,
                                   p_reason);
    insert into wallet_credits (company_id, request_id, entry_type, amount_nanos, reason, actor,
                                ledger_sequence, balance_after_nanos)
    values (p_company_id, p_request_id, p_entry_type, p_amount_nanos, p_reason, p_actor,
            v_entry.sequence, v_entry.balance_after_nanos)
    returning * into credit;
    perform emit_wallet_event(p_company_id, 'manual_credit', jsonb_build_object(
        'entry_type', p_entry_type, 'amount_nanos', p_amount_nanos, 'balance_nanos', v_entry.balance_after_nanos,
        'ledger_sequence', v_entry.sequence, 'reason', p_reason, 'actor', p_actor,
        'request_id', p_request_id));
end
$$;

-- AuthorizeUsage in one round trip. Returns the stored hold (a replay, with the claim to compare), or a
-- denial with hold null. Denials are not kept: the claim is given back, and a retry decides again.
create function authorize_usage(
    p_hold_id uuid, p_company_id text, p_request_id text, p_request_hash bytea, p_usage_type text,
    p_rate_key text, p_billable_units bigint, p_ttl interval,
    out hold holds, out denial text, out amount_nanos bigint, out unit_price_nanos bigint,
    out rate_card text, out rate_card_version integer, out available_nanos bigint, out floor_nanos bigint,
    out checked_at timestamptz, out replayed boolean, out claimed_operation text, out claimed_hash bytea)
language plpgsql as $$
declare
    v_claim  record;
    v_rate   record;
    v_wallet record;
begin
    checked_at := now();
    select * into v_rate from effective_rate(p_company_id, p_rate_key, now());
    select * into v_claim from claim_idempotency_key(p_company_id => p_company_id, p_request_id => p_request_id,
        p_operation => 'authorize_usage', p_request_hash => p_request_hash);
    replayed := not v_claim.claimed;
    claimed_operation := v_claim.operation;
    claimed_hash := v_claim.request_hash;
    -- The wallet lock serializes a company's authorizations: the sum of holds cannot be raced past.
    select balance_nanos, credit_limit_nanos, suspended into v_wallet
      from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    floor_nanos := -v_wallet.credit_limit_nanos;
    available_nanos := v_wallet.balance_nanos - held_nanos(p_company_id);
    if replayed then
        select * into hold from holds where company_id = p_company_id and request_id = p_request_id;
        return;
    end if;
    if v_rate.unit_price_nanos is null then
        raise exception 'no rate card has a % rate in effect at %', p_rate_key, now() using errcode = 'BL412';
    end if;

    unit_price_nanos := v_rate.unit_price_nanos;
    rate_card := v_rate.rate_card;
    rate_card_version := v_rate.rate_card_version;
    amount_nanos := p_billable_units * v_rate.unit_price_nanos;
    hold := null;
    if v_wallet.suspended then
        denial := 'WALLET_SUSPENDED';
    elsif available_nanos - amount_nanos < floor_nanos then
        denial := 'INSUFFICIENT_FUNDS';
    end if;
    if denial is not null then
        delete from idempotency_keys where company_id = p_company_id and request_id = p_request_id;
        return;
    end if;
    insert into holds (hold_id, company_id, request_id, usage_type, rate_key, billable_units,
                       unit_price_nanos, amount_nanos, rate_card, rate_card_version, expires_at)
    values (p_hold_id, p_company_id, p_request_id, p_usage_type, p_rate_key,
            p_billable_units, v_rate.unit_price_nanos, p_billable_units * v_rate.unit_price_nanos,
            v_rate.rate_card, v_rate.rate_card_version, now() + p_ttl)
    returning * into hold;
    available_nanos := available_nanos - amount_nanos;
end
$$;
