-- VoidUsageRecord in one round trip: claim the request id, lock the wallet, check what is left of the
-- record to void, append a 'usage_void' ledger entry (a credit naming the record, reference
-- 'void:<request id>'), store the void, emit 'usage_voided'. p_amount_nanos null voids what is left.
-- On a replay the stored void comes back with the claim, for the caller to compare.
create or replace function void_usage_record(
    p_company_id text, p_request_id text, p_request_hash bytea, p_usage_record_id uuid, p_amount_nanos bigint,
    p_reason text, p_actor text, p_principal_id text,
    out void usage_voids, out record_amount_nanos bigint, out voided_before_nanos bigint,
    out replayed boolean, out claimed_operation text, out claimed_hash bytea)
language plpgsql as $$
declare
    v_claim  record;
    v_amount bigint;
    v_entry  ledger_entries;
begin
    select * into v_claim from claim_idempotency_key(p_company_id => p_company_id, p_request_id => p_request_id,
        p_operation => 'void_usage_record', p_request_hash => p_request_hash);
    replayed := not v_claim.claimed;
    claimed_operation := v_claim.operation;
    claimed_hash := v_claim.request_hash;
    if replayed then
        select * into void from usage_voids where company_id = p_company_id and request_id = p_request_id;
        return;
    end if;
    perform 1 from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    select amount_nanos into record_amount_nanos from usage_records
     where company_id = p_company_id and usage_record_id = p_usage_record_id;
    if not found then
        raise exception 'usage record % not found for company %', p_usage_record_id, p_company_id
            using errcode = 'BLV04';
    end if;
    -- Voids of a record are written only under the wallet lock held here: the sum is stable.
    select coalesce(sum(amount_nanos), 0)::bigint into voided_before_nanos from usage_voids
     where company_id = p_company_id and usage_record_id = p_usage_record_id;
    v_amount := coalesce(p_amount_nanos, record_amount_nanos - voided_before_nanos);
    if v_amount <= 0 or voided_before_nanos + v_amount > record_amount_nanos then
        raise exception 'usage record % is for % nanos, % already voided: % more cannot be voided',
            p_usage_record_id, record_amount_nanos, voided_before_nanos, v_amount using errcode = 'BLV09';
    end if;
    v_entry := append_ledger_entry(p_company_id => p_company_id, p_entry_type => 'usage_void',
                                   p_amount_nanos => v_amount, p_reference => 'void:' || p_request_id,
                                   p_description => p_reason, p_usage_record_id => p_usage_record_id);
    insert into usage_voids (company_id, request_id, usage_record_id, amount_nanos, reason, actor,
                             principal_id, ledger_sequence, balance_after_nanos)
    values (p_company_id, p_request_id, p_usage_record_id, v_amount, p_reason, p_actor, p_principal_id,
            v_entry.sequence, v_entry.balance_after_nanos)
    returning * into void;
    perform emit_wallet_event(p_company_id => p_company_id, p_event_type => 'usage_voided', p_payload => jsonb_build_object(
        'usage_record_id', p_usage_record_id, 'amount_nanos', v_amount, 'record_amount_nanos', record_amount_nanos,
        'voided_nanos', voided_before_nanos + v_amount, 'balance_nanos', v_entry.balance_after_nanos,
        'ledger_sequence', v_entry.sequence, 'reason', p_reason, 'actor', p_actor, 'principal_id', p_principal_id,
        'request_id', p_request_id));
end
$$;
