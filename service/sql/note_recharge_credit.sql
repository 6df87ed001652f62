-- A recharge or pre-load credit clears a failed recharge and records when the wallet was last recharged.
create or replace function note_recharge_credit() returns trigger
language plpgsql as $$
begin
    update wallets set last_recharge_at = new.created_at, last_recharge_failed = false
     where company_id = new.company_id;
    return null;
end
$$;

create or replace trigger ledger_entries_note_recharge after insert on ledger_entries
    for each row when (new.entry_type in ('recharge_credit', 'preload_credit'))
    execute function note_recharge_credit();
