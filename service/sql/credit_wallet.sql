-- CreditWallet in one round trip: lock, append the ledger entry (append_ledger_entry()), store the credit,
-- emit the event. Idempotent under (company_id, request_id); replayed tells a stored credit from a new one.
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
    v_entry := append_ledger_entry(
        p_company_id => p_company_id, p_entry_type => p_entry_type, p_amount_nanos => p_amount_nanos,
        p_reference => 'credit:' || p_request_id, p_description => p_reason);
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
