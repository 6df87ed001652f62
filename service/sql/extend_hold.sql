-- ExtendHold in one round trip: claim the request id, lock the wallet, grow the hold by what is
-- affordable of p_additional_quantity at the hold's own unit price, move its expiry to now() + p_ttl,
-- record the extension. A replay returns the stored extension with the claim to compare; a denial is
-- not kept (the claim is given back) and changes nothing.
--
-- The funds for the hold are the available balance with this hold's own amount given back (an expired
-- hold counts for nothing, so it must be covered whole again), less the floor; the units they pay for
-- follow pricing.affordable_units, and the extension is what lies beyond the hold's current quantity.
create or replace function extend_hold(
    p_company_id text, p_hold_id uuid, p_request_id text, p_request_hash bytea, p_additional_quantity bigint,
    p_ttl interval, p_allow_partial boolean,
    out hold holds, out extension hold_extensions, out denial text, out affordable_quantity bigint,
    out available_nanos bigint, out floor_nanos bigint, out checked_at timestamptz, out replayed boolean,
    out claimed_operation text, out claimed_hash bytea)
language plpgsql as $$
declare
    v_claim        record;
    v_wallet       record;
    v_counted      bigint;
    v_funds        bigint;
    v_wanted_qty   bigint;
    v_wanted_units bigint;
    v_units        bigint;
    v_new_qty      bigint;
begin
    checked_at := now();
    select * into v_claim from claim_idempotency_key(p_company_id => p_company_id, p_request_id => p_request_id,
        p_operation => 'extend_hold', p_request_hash => p_request_hash);
    replayed := not v_claim.claimed;
    claimed_operation := v_claim.operation;
    claimed_hash := v_claim.request_hash;
    select balance_nanos, credit_limit_nanos, minimum_balance_nanos, suspended into v_wallet
      from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    floor_nanos := -v_wallet.credit_limit_nanos;
    available_nanos := v_wallet.balance_nanos - held_nanos(p_company_id => p_company_id);
    if replayed then
        select * into extension from hold_extensions where company_id = p_company_id and request_id = p_request_id;
        select * into hold from holds where company_id = p_company_id and hold_id = extension.hold_id;
        affordable_quantity := extension.affordable_quantity;
        return;
    end if;

    -- Holds change only under the wallet lock held here.
    select * into hold from holds where company_id = p_company_id and hold_id = p_hold_id;
    if not found then
        raise exception 'hold % not found for company %', p_hold_id, p_company_id using errcode = 'BLH04';
    elsif hold.state = 'captured' then
        raise exception 'hold % was already captured by usage record %', p_hold_id, hold.usage_record_id
            using errcode = 'BLH09';
    elsif hold.state = 'released' then
        raise exception 'hold % was released; authorize the usage again', p_hold_id using errcode = 'BLH10';
    end if;

    v_counted := case when hold.expires_at > now() then hold.amount_nanos else 0 end;
    v_funds := available_nanos + v_counted - floor_nanos;
    v_wanted_qty := hold.authorized_quantity + p_additional_quantity;
    v_wanted_units := (v_wanted_qty + hold.quantity_per_unit - 1) / hold.quantity_per_unit;
    if v_wallet.suspended then
        v_units := 0;
    elsif hold.unit_price_nanos = 0 then
        v_units := v_wanted_units;
    else
        v_units := least(v_wanted_units, greatest(0, v_funds) / hold.unit_price_nanos);
    end if;
    v_new_qty := case when v_units >= v_wanted_units then v_wanted_qty else v_units * hold.quantity_per_unit end;
    affordable_quantity := greatest(0, v_new_qty - hold.authorized_quantity);

    if v_wallet.suspended then
        denial := 'WALLET_SUSPENDED';
    elsif v_units < v_wanted_units and not (p_allow_partial and affordable_quantity > 0) then
        denial := 'INSUFFICIENT_FUNDS';
    end if;
    if denial is not null then
        delete from idempotency_keys where company_id = p_company_id and request_id = p_request_id;
        return;
    end if;

    insert into hold_extensions (company_id, request_id, hold_id, requested_quantity, added_quantity,
                                 added_units, added_amount_nanos, affordable_quantity, expires_at)
    values (p_company_id, p_request_id, p_hold_id, p_additional_quantity, affordable_quantity,
            v_units - hold.billable_units, (v_units - hold.billable_units) * hold.unit_price_nanos,
            affordable_quantity, now() + p_ttl)
    returning * into extension;
    update holds
       set billable_units = v_units, amount_nanos = v_units * unit_price_nanos, authorized_quantity = v_new_qty,
           expires_at = now() + p_ttl
     where company_id = p_company_id and hold_id = p_hold_id
    returning * into hold;
    perform note_hold_below_minimum(p_company_id => p_company_id, p_hold_id => p_hold_id,
        p_available_before_nanos => available_nanos,
        p_available_after_nanos => available_nanos + v_counted - hold.amount_nanos,
        p_minimum_balance_nanos => v_wallet.minimum_balance_nanos);
    available_nanos := available_nanos + v_counted - hold.amount_nanos;
end
$$;
