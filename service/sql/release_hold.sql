-- ReleaseHold: idempotent (releasing a released or expired hold returns it unchanged). A captured
-- hold cannot be released.
--
-- It takes the wallet row lock first, as RecordUsage does before it checks and captures a hold: a
-- release and a capture of one hold serialize, and the second sees what the first did (released or
-- captured) and raises its typed error, instead of both writing the row.
create or replace function release_hold(p_company_id text, p_hold_id uuid) returns holds
language plpgsql as $$
declare
    v_hold holds;
begin
    perform 1 from wallets where company_id = p_company_id for update;
    update holds set state = 'released', released_at = now()
     where hold_id = p_hold_id and company_id = p_company_id and state = 'active' and expires_at > now()
    returning * into v_hold;
    if found then
        return v_hold;
    end if;
    select * into v_hold from holds where hold_id = p_hold_id and company_id = p_company_id;
    if not found then
        raise exception 'hold % not found for company %', p_hold_id, p_company_id using errcode = 'BLH04';
    end if;
    if v_hold.state = 'captured' then
        raise exception 'hold % was captured by usage record %; it cannot be released',
            p_hold_id, v_hold.usage_record_id using errcode = 'BLH09';
    end if;
    return v_hold;
end
$$;
