-- CreditWallet (and DebitWallet, p_entry_type 'manual_debit' with a negative amount) in one round trip:
-- claim the request id, lock, append the ledger entry, store the credit, emit the event
-- ('manual_credit', or 'manual_debit'). On a replay the stored credit comes back with the claim, for the caller to compare.
create or replace function credit_wallet(
    p_company_id text, p_request_id text, p_request_hash bytea, p_entry_type text, p_amount_nanos bigint,
    p_reason text, p_actor text, p_principal_id text,
    out credit wallet_credits, out replayed boolean, out claimed_operation text, out claimed_hash bytea)
language plpgsql as $$
declare
    v_claim record;
    v_entry ledger_entries;
begin
    select * into v_claim from claim_idempotency_key(p_company_id => p_company_id, p_request_id => p_request_id,
        p_operation => 'credit_wallet', p_request_hash => p_request_hash);
    replayed := not v_claim.claimed;
    claimed_operation := v_claim.operation;
    claimed_hash := v_claim.request_hash;
    if replayed then
        select * into credit from wallet_credits where company_id = p_company_id and request_id = p_request_id;
        return;
    end if;
    perform 1 from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    v_entry := append_ledger_entry(p_company_id => p_company_id, p_entry_type => p_entry_type,
                                   p_amount_nanos => p_amount_nanos, p_reference => 'credit:' || p_request_id,
                                   p_description => p_reason);
    insert into wallet_credits (company_id, request_id, entry_type, amount_nanos, reason, actor,
                                principal_id, ledger_sequence, balance_after_nanos)
    values (p_company_id, p_request_id, p_entry_type, p_amount_nanos, p_reason, p_actor,
            p_principal_id, v_entry.sequence, v_entry.balance_after_nanos)
    returning * into credit;
    perform emit_wallet_event(p_company_id => p_company_id,
        p_event_type => case when p_entry_type = 'manual_debit' then 'manual_debit' else 'manual_credit' end,
        p_payload => jsonb_build_object(
        'entry_type', p_entry_type, 'amount_nanos', p_amount_nanos, 'balance_nanos', v_entry.balance_after_nanos,
        'ledger_sequence', v_entry.sequence, 'reason', p_reason, 'actor', p_actor,
        'principal_id', p_principal_id, 'request_id', p_request_id));
end
$$;
