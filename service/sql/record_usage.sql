-- RecordUsage's whole transaction in one round trip: claim the key, price, lock the wallet, check the
-- hold, debit (through append_ledger_entry()), store the record, capture the hold. Returns the stored
-- record; when its usage_record_id is not the one proposed, the key had been used before and the caller
-- compares request_hash.
--
-- p_hold_id: a hold to capture. It must belong to the company and be neither captured nor released (an
-- expired hold may still be captured: the usage happened). It is marked captured and the actual amount
-- is debited, whether more or less than was held.
--
-- The debit that takes the balance from at-or-above the minimum to below it emits
-- 'balance_below_minimum' and notifies 'wallet_below_minimum' (the recharge loop listens).
--
-- p_posted_at (null: now()) stamps the ledger entry and recorded_at; only test fixtures that write
-- history at chosen times pass it.
create or replace function record_usage(
    p_usage_record_id uuid, p_company_id text, p_idempotency_key text, p_request_hash bytea,
    p_usage_type text, p_rate_key text, p_direction text, p_number_type text, p_quantity bigint,
    p_sms_encoding text, p_billable_units bigint, p_occurred_at timestamptz, p_hold_id uuid default null,
    p_posted_at timestamptz default null)
returns usage_records
language plpgsql as $$
declare
    v_record  usage_records;
    v_rate    record;
    v_wallet  record;
    v_hold    record;
    v_amount  bigint;
    v_entry   ledger_entries;
begin
    -- Fast path for retries of committed requests: no wallet lock needed.
    select * into v_record from usage_records
     where company_id = p_company_id and idempotency_key = p_idempotency_key;
    if found then
        return v_record;
    end if;

    -- Priced before taking the lock, to keep the lock short.
    select * into v_rate from effective_rate(p_company_id, p_rate_key, p_occurred_at);

    select balance_nanos, minimum_balance_nanos into v_wallet
      from wallets where company_id = p_company_id for update;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;

    -- Under the lock, a concurrent request with the same key has either committed (seen here, since
    -- each statement takes a fresh snapshot) or not started its debit.
    select * into v_record from usage_records
     where company_id = p_company_id and idempotency_key = p_idempotency_key;
    if found then
        return v_record;
    end if;

    if v_rate.unit_price_nanos is null then
        raise exception 'no rate card has a % rate in effect at %', p_rate_key, p_occurred_at
            using errcode = 'BL412';
    end if;

    if p_hold_id is not null then
        -- Holds are only changed under the wallet lock held here (release_hold() takes it too), so this
        -- read is stable; the row lock is a second guard for any writer that forgot the wallet lock.
        select state, usage_record_id into v_hold from holds
         where hold_id = p_hold_id and company_id = p_company_id for update;
        if not found then
            raise exception 'hold % not found for company %', p_hold_id, p_company_id using errcode = 'BLH04';
        elsif v_hold.state = 'captured' then
            raise exception 'hold % was already captured by usage record %', p_hold_id, v_hold.usage_record_id
                using errcode = 'BLH09';
        elsif v_hold.state = 'released' then
            raise exception 'hold % was released; record the usage without hold_id', p_hold_id
                using errcode = 'BLH10';
        end if;
    end if;

    v_amount := p_billable_units * v_rate.unit_price_nanos;
    v_entry := append_ledger_entry(
        p_company_id => p_company_id, p_entry_type => 'usage_debit', p_amount_nanos => -v_amount,
        p_reference => null, p_description => null, p_usage_record_id => p_usage_record_id,
        p_posted_at => p_posted_at);

    insert into usage_records (usage_record_id, company_id, idempotency_key, request_hash, usage_type,
                               rate_key, direction, number_type, quantity, sms_encoding, billable_units,
                               unit_price_nanos, amount_nanos, rate_card, rate_card_version, occurred_at,
                               recorded_at, ledger_sequence, balance_after_nanos, below_minimum)
    values (p_usage_record_id, p_company_id, p_idempotency_key, p_request_hash, p_usage_type, p_rate_key,
            p_direction, p_number_type, p_quantity, p_sms_encoding, p_billable_units,
            v_rate.unit_price_nanos, v_amount, v_rate.rate_card, v_rate.rate_card_version, p_occurred_at,
            coalesce(p_posted_at, now()), v_entry.sequence, v_entry.balance_after_nanos,
            v_entry.balance_after_nanos < v_wallet.minimum_balance_nanos)
    returning * into v_record;

    if p_hold_id is not null then
        update holds set state = 'captured', captured_at = now(), usage_record_id = p_usage_record_id
         where company_id = p_company_id and hold_id = p_hold_id;
    end if;

    if v_entry.balance_before_nanos >= v_wallet.minimum_balance_nanos
       and v_entry.balance_after_nanos < v_wallet.minimum_balance_nanos then
        perform emit_wallet_event(p_company_id, 'balance_below_minimum', jsonb_build_object(
            'balance_nanos', v_entry.balance_after_nanos, 'minimum_balance_nanos', v_wallet.minimum_balance_nanos,
            'usage_record_id', p_usage_record_id, 'ledger_sequence', v_entry.sequence));
        perform pg_notify('wallet_below_minimum', p_company_id);
    end if;
    return v_record;
end
$$;
