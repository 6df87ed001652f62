-- AuthorizeUsage in one round trip. Returns the stored hold (a replay, with the claim to compare), or a
-- denial with hold null. Denials are not kept: the claim is given back, and a retry decides again.
create or replace function authorize_usage(
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
    select * into v_rate from effective_rate(p_company_id => p_company_id, p_rate_key => p_rate_key, p_at => now());
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
    available_nanos := v_wallet.balance_nanos - held_nanos(p_company_id => p_company_id);
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
