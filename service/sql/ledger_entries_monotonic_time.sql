-- Ledger time, non-decreasing along each wallet's sequence. created_at defaults to now(), the
-- transaction's start, and a transaction that waited for the wallet lock can get a later sequence than
-- one that started after it. This moves such an entry's created_at up to its predecessor's (a moment that
-- is still inside the inserting transaction, since the predecessor committed before this one got the
-- lock). Then "the entries before instant t" is a prefix of the sequence, found with one index probe, and
-- a statement's opening balance is exactly balance_after_nanos of the last entry of that prefix: months
-- chain exactly, and an export's rows sum to the balance movement.
--
-- record_usages() appends a whole run per wallet in one statement and gives it the same created_at, no
-- earlier than the wallet's last entry, which is this rule already; it sets billing.ledger_time_checked
-- (transaction-local, around that one statement) so that its rows skip this per-row trigger.
create or replace function ledger_entries_monotonic_time() returns trigger
language plpgsql as $$
declare
    v_previous timestamptz;
begin
    select created_at into v_previous from ledger_entries
     where company_id = new.company_id and sequence = new.sequence - 1;
    if v_previous > new.created_at then
        new.created_at := v_previous;
    end if;
    return new;
end
$$;

create or replace trigger ledger_entries_monotonic_time before insert on ledger_entries
    for each row when (current_setting('billing.ledger_time_checked', true) is distinct from 'on')
    execute function ledger_entries_monotonic_time();
