-- Emits 'wallet_suspended' / 'wallet_reactivated' in the transaction that flips wallets.suspended (a
-- generated column, so every path that changes its inputs is covered without calling anything).
create or replace function wallet_suspension_changed() returns trigger
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
create or replace trigger wallets_suspension_changed after update on wallets
    for each row when (old.suspended is distinct from new.suspended)
    execute function wallet_suspension_changed();
