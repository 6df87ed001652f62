-- The one place that appends to the ledger: every writer (record_usage(), credit_wallet(), the recharge
-- engine in service/recharge/store.py) calls it, so the chain rule lives here only. Under the wallet row
-- lock: the entry gets sequence last_sequence + 1 and the balance before and after, and the wallet moves
-- with it. Re-taking a lock the caller already holds is cheap.
--
-- p_posted_at (null: now()) is for test fixtures that write history at chosen times; the service never
-- passes it. The monotonic-time trigger still applies to it.
create or replace function append_ledger_entry(
    p_company_id text, p_entry_type text, p_amount_nanos bigint, p_reference text, p_description text,
    p_recharge_attempt_id uuid default null, p_usage_record_id uuid default null,
    p_posted_at timestamptz default null)
returns ledger_entries
language plpgsql as $$
declare
    v_wallet record;
    v_entry  ledger_entries;
begin
    select balance_nanos, last_sequence into v_wallet from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                balance_after_nanos, usage_record_id, reference, description,
                                recharge_attempt_id, created_at)
    values (p_company_id, v_wallet.last_sequence + 1, p_entry_type, p_amount_nanos, v_wallet.balance_nanos,
            v_wallet.balance_nanos + p_amount_nanos, p_usage_record_id, p_reference,
            coalesce(p_description, ''), p_recharge_attempt_id, coalesce(p_posted_at, now()))
    returning * into v_entry;
    update wallets
       set balance_nanos = v_entry.balance_after_nanos, last_sequence = v_entry.sequence, updated_at = now()
     where company_id = p_company_id;
    return v_entry;
end
$$;
