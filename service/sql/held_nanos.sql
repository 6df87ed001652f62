-- What a wallet's active, unexpired holds reserve.
create or replace function held_nanos(p_company_id text) returns bigint
language sql stable as $$
    select coalesce(sum(amount_nanos), 0)::bigint from holds
     where company_id = p_company_id and state = 'active' and expires_at > now()
$$;
