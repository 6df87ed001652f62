-- A hold (AuthorizeUsage, ExtendHold) that takes the available balance from at-or-above the minimum to
-- below it starts the recharge, as such a debit does: the 'balance_below_minimum' event, and the NOTIFY
-- the recharge loop listens to. The recharge engine plans from the available balance, so the charge
-- covers what is held. Call it under the wallet lock, in the transaction that made the hold.
create or replace function note_hold_below_minimum(
    p_company_id text, p_hold_id uuid, p_available_before_nanos bigint, p_available_after_nanos bigint,
    p_minimum_balance_nanos bigint)
returns void
language plpgsql as $$
begin
    if p_available_before_nanos >= p_minimum_balance_nanos and p_available_after_nanos < p_minimum_balance_nanos then
        perform emit_wallet_event(p_company_id, 'balance_below_minimum', jsonb_build_object(
            'available_nanos', p_available_after_nanos, 'minimum_balance_nanos', p_minimum_balance_nanos,
            'hold_id', p_hold_id, 'cause', 'hold'));
        perform pg_notify('wallet_below_minimum', p_company_id);
    end if;
end
$$;
