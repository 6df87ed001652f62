-- AuthorizeUsage in one round trip. Returns the stored hold (replay when hold_id is not the one
-- proposed), or a denial with hold_id null. Denials are not stored: a retry decides again.
create or replace function authorize_usage(
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
