-- Appends one event for a company and wakes listeners. Takes (or re-takes) the wallet row lock, which
-- orders the company's events; call it inside the transaction that makes the change.
create or replace function emit_wallet_event(p_company_id text, p_event_type text, p_payload jsonb)
returns wallet_events
language plpgsql as $$
declare
    v_event wallet_events;
    v_sequence bigint;
begin
    update wallets set last_event_sequence = last_event_sequence + 1
     where company_id = p_company_id
    returning last_event_sequence into v_sequence;
    if not found then
        raise exception 'company % has no wallet', p_company_id using errcode = 'BL404';
    end if;
    insert into wallet_events (company_id, sequence, event_type, payload)
    values (p_company_id, v_sequence, p_event_type, coalesce(p_payload, '{}'::jsonb))
    returning * into v_event;
    -- Delivered at commit, only if the transaction commits.
    perform pg_notify('wallet_events', p_company_id || ':' || v_event.event_id);
    return v_event;
end
$$;
