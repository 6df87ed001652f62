-- Claims (company, request id) for an operation in the caller's transaction, or returns the earlier
-- claim (claimed = false) for the caller to compare. A concurrent claim of the same key waits for the
-- first transaction and then sees its row (or takes the key if that one rolled back).
create or replace function claim_idempotency_key(
    p_company_id text, p_request_id text, p_operation text, p_request_hash bytea,
    out claimed boolean, out operation text, out request_hash bytea, out result jsonb)
language plpgsql as $$
begin
    insert into idempotency_keys (company_id, request_id, operation, request_hash)
    values (p_company_id, p_request_id, p_operation, p_request_hash)
    on conflict (company_id, request_id) do nothing;
    claimed := found;
    select k.operation, k.request_hash, k.result into operation, request_hash, result
      from idempotency_keys k where k.company_id = p_company_id and k.request_id = p_request_id;
end
$$;
