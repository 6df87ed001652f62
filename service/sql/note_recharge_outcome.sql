-- Recharge outcomes arrive as events (the recharge engine emits 'recharge_succeeded' / 'recharge_failed'
-- through emit_wallet_event); the wallet remembers the last one for the suspension rule.
create or replace function note_recharge_outcome() returns trigger
language plpgsql as $$
begin
    update wallets set last_recharge_failed = (new.event_type = 'recharge_failed')
     where company_id = new.company_id
       and last_recharge_failed is distinct from (new.event_type = 'recharge_failed');
    return null;
end
$$;

create or replace trigger wallet_events_note_recharge_outcome after insert on wallet_events
    for each row when (new.event_type in ('recharge_succeeded', 'recharge_failed'))
    execute function note_recharge_outcome();
