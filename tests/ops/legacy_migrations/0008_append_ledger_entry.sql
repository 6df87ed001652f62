-- 0008: one function appends a credit (or any entry off the RecordUsage hot path) to the ledger.
--
-- Until now CreditWallet (0004) and the recharge engine (service/recharge/store.py) each wrote the same
-- steps: lock the wallet row, append the entry with the next sequence and the balance before and after,
-- move the wallet. They now share this function, so the chain rule lives in one place; the recharge
-- credit also becomes one round trip instead of three. record_usage() keeps its own inline debit: it is
-- the hot path, and it already holds the lock and the balance when it debits.

create function append_ledger_entry(
    p_company_id text, p_entry_type text, p_amount_nanos bigint, p_reference text, p_description text,
    p_recharge_attempt_id uuid default null)
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
                                balance_after_nanos, reference, description, recharge_attempt_id)
    values (p_company_id, v_wallet.last_sequence + 1, p_entry_type, p_amount_nanos, v_wallet.balance_nanos,
            v_wallet.balance_nanos + p_amount_nanos, p_reference, coalesce(p_description, ''),
            p_recharge_attempt_id)
    returning * into v_entry;
    update wallets
       set balance_nanos = v_entry.balance_after_nanos, last_sequence = v_entry.sequence, updated_at = now()
     where company_id = p_company_id;
    return v_entry;
end
$$;

-- credit_wallet as in 0004, appending through append_ledger_entry().
create or replace function credit_wallet(
    p_company_id text, p_request_id text, p_request_hash bytea, p_entry_type text, p_amount_nanos bigint,
    p_reason text, p_actor text, out credit wallet_credits, out replayed boolean)
language plpgsql as $$
declare
    v_entry ledger_entries;
begin
    replayed := true;
    select * into credit from wallet_credits where company_id = p_company_id and request_id = p_request_id;
    if found then
        return;
    end if;
    perform 1 from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    -- Under the lock, a concurrent request with the same id has either committed (seen here) or not begun.
    select * into credit from wallet_credits where company_id = p_company_id and request_id = p_request_id;
    if found then
        return;
    end if;
    replayed := false;
    v_entry := append_ledger_entry(p_company_id, p_entry_type, p_amount_nanos, 'credit:' || p_request_id,
                                   p_reason);
    insert into wallet_credits (company_id, request_id, request_hash, entry_type, amount_nanos, reason, actor,
                                ledger_sequence, balance_after_nanos)
    values (p_company_id, p_request_id, p_request_hash, p_entry_type, p_amount_nanos, p_reason, p_actor,
            v_entry.sequence, v_entry.balance_after_nanos)
    returning * into credit;
    perform emit_wallet_event(p_company_id, 'manual_credit', jsonb_build_object(
        'entry_type', p_entry_type, 'amount_nanos', p_amount_nanos, 'balance_nanos', v_entry.balance_after_nanos,
        'ledger_sequence', v_entry.sequence, 'reason', p_reason, 'actor', p_actor,
        'request_id', p_request_id));
end
$$;
