-- Append-only tables: the ledger and the records that must never be rewritten (rate card versions that
-- priced past usage, the settings audit trail, the event outbox, manual credits). Enforced by the
-- database itself rather than by convention.
create or replace function reject_ledger_mutation() returns trigger
language plpgsql as $$
begin
    raise exception '% on % is not allowed: the table is append-only', tg_op, tg_table_name
        using errcode = 'BL001';
end
$$;

create or replace trigger ledger_entries_append_only before update or delete on ledger_entries
    for each row execute function reject_ledger_mutation();
create or replace trigger ledger_entries_no_truncate before truncate on ledger_entries
    for each statement execute function reject_ledger_mutation();
create or replace trigger rate_cards_immutable before update or delete on rate_cards
    for each row execute function reject_ledger_mutation();
create or replace trigger rate_card_rates_immutable before update or delete on rate_card_rates
    for each row execute function reject_ledger_mutation();
create or replace trigger settings_changes_append_only before update or delete on settings_changes
    for each row execute function reject_ledger_mutation();
create or replace trigger wallet_events_append_only before update or delete on wallet_events
    for each row execute function reject_ledger_mutation();
create or replace trigger wallet_credits_append_only before update or delete on wallet_credits
    for each row execute function reject_ledger_mutation();
