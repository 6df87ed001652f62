-- AuthorizeUsage in one round trip. Returns the stored hold (a replay, with the claim to compare), or a
-- denial with hold null. Denials are not kept: the claim is given back, and a retry decides again.
--
-- affordable_quantity: how much of the usage (p_quantity, in the kind's quantity: a call's seconds)
-- the funds above the floor pay for at the rate in effect, whole billable units of p_quantity_per_unit
-- each; the rule of service/domain/pricing.py (affordable_units, affordable_quantity). With
-- p_allow_partial an unaffordable usage is held for that part. A hold that takes the available balance
-- from at-or-above the minimum to below it starts the recharge, as a debit does (note_hold_below_minimum).
create or replace function authorize_usage(
    p_hold_id uuid, p_company_id text, p_request_id text, p_request_hash bytea, p_usage_type text,
    p_rate_key text, p_billable_units bigint, p_ttl interval, p_quantity bigint, p_quantity_per_unit integer,
    p_allow_partial boolean,
    out hold holds, out denial text, out amount_nanos bigint, out unit_price_nanos bigint,
    out rate_card text, out rate_card_version integer, out available_nanos bigint, out floor_nanos bigint,
    out checked_at timestamptz, out replayed boolean, out claimed_operation text, out claimed_hash bytea,
    out affordable_quantity bigint)
language plpgsql as $$
declare
    v_claim    record;
    v_rate     record;
    v_wallet   record;
    v_units    bigint;
    v_quantity bigint;
begin
    checked_at := now();
    select * into v_rate from effective_rate(p_company_id => p_company_id, p_rate_key => p_rate_key, p_at => now());
    select * into v_claim from claim_idempotency_key(p_company_id => p_company_id, p_request_id => p_request_id,
        p_operation => 'authorize_usage', p_request_hash => p_request_hash);
    replayed := not v_claim.claimed;
    claimed_operation := v_claim.operation;
    claimed_hash := v_claim.request_hash;
    -- The wallet lock serializes a company's authorizations: the sum of holds cannot be raced past.
    select balance_nanos, credit_limit_nanos, minimum_balance_nanos, suspended into v_wallet
      from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    floor_nanos := -v_wallet.credit_limit_nanos;
    available_nanos := v_wallet.balance_nanos - held_nanos(p_company_id => p_company_id);
    if replayed then
        select * into hold from holds where company_id = p_company_id and request_id = p_request_id;
        affordable_quantity := hold.authorized_quantity;
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
    -- pricing.affordable_units and pricing.affordable_quantity.
    if v_wallet.suspended then
        v_units := 0;
    elsif v_rate.unit_price_nanos = 0 then
        v_units := p_billable_units;
    else
        v_units := least(p_billable_units,
                         greatest(0, available_nanos - floor_nanos) / v_rate.unit_price_nanos);
    end if;
    v_quantity := case when v_units >= p_billable_units then p_quantity else v_units * p_quantity_per_unit end;
    affordable_quantity := v_quantity;

    if v_wallet.suspended then
        denial := 'WALLET_SUSPENDED';
    elsif v_units < p_billable_units and not (p_allow_partial and v_units > 0) then
        denial := 'INSUFFICIENT_FUNDS';
    end if;
    if denial is not null then
        delete from idempotency_keys where company_id = p_company_id and request_id = p_request_id;
        return;
    end if;
    amount_nanos := v_units * v_rate.unit_price_nanos;
    insert into holds (hold_id, company_id, request_id, usage_type, rate_key, billable_units,
                       unit_price_nanos, amount_nanos, rate_card, rate_card_version, expires_at,
                       authorized_quantity, quantity_per_unit)
    values (p_hold_id, p_company_id, p_request_id, p_usage_type, p_rate_key,
            v_units, v_rate.unit_price_nanos, amount_nanos,
            v_rate.rate_card, v_rate.rate_card_version, now() + p_ttl, v_quantity, p_quantity_per_unit)
    returning * into hold;
    perform note_hold_below_minimum(p_company_id => p_company_id, p_hold_id => p_hold_id,
        p_available_before_nanos => available_nanos, p_available_after_nanos => available_nanos - amount_nanos,
        p_minimum_balance_nanos => v_wallet.minimum_balance_nanos);
    available_nanos := available_nanos - amount_nanos;
end
$$;
