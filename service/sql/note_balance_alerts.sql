-- Balance alerts, in the transaction of the ledger entry that moves the balance: the thresholds the
-- entry crosses downward (balance before >= threshold > balance after) emit 'balance_alert', highest
-- first, as the balance passes them; those it crosses upward (before < threshold <= after) emit
-- 'balance_alert_resolved', lowest first. Each threshold remembers whether the balance is below it, so
-- a crossing alerts once however many debits follow below it, and only an alerted threshold resolves.
--
-- Called by the trigger below for every ledger entry, whichever path appends it (usage debits, credits,
-- recharges, corrections), except the debits record_usages() appends: it notes their alerts in one set
-- statement of its own (same rule, same events, same order) and sets billing.balance_alerts_noted
-- (transaction-local, around that one insert) so that its rows skip the trigger.
create or replace function note_balance_alerts(
    p_company_id text, p_balance_before_nanos bigint, p_balance_after_nanos bigint, p_ledger_sequence bigint)
returns void
language plpgsql as $$
declare
    v_threshold bigint;
begin
    if p_balance_after_nanos < p_balance_before_nanos then
        for v_threshold in
            with crossed as (
                update balance_alert_thresholds set below = true
                 where company_id = p_company_id and not below
                   and threshold_nanos <= p_balance_before_nanos and threshold_nanos > p_balance_after_nanos
                returning threshold_nanos)
            select threshold_nanos from crossed order by threshold_nanos desc
        loop
            perform emit_wallet_event(p_company_id, 'balance_alert', jsonb_build_object(
                'threshold_nanos', v_threshold, 'balance_nanos', p_balance_after_nanos,
                'balance_before_nanos', p_balance_before_nanos, 'ledger_sequence', p_ledger_sequence));
        end loop;
    elsif p_balance_after_nanos > p_balance_before_nanos then
        for v_threshold in
            with crossed as (
                update balance_alert_thresholds set below = false
                 where company_id = p_company_id and below
                   and threshold_nanos > p_balance_before_nanos and threshold_nanos <= p_balance_after_nanos
                returning threshold_nanos)
            select threshold_nanos from crossed order by threshold_nanos
        loop
            perform emit_wallet_event(p_company_id, 'balance_alert_resolved', jsonb_build_object(
                'threshold_nanos', v_threshold, 'balance_nanos', p_balance_after_nanos,
                'balance_before_nanos', p_balance_before_nanos, 'ledger_sequence', p_ledger_sequence));
        end loop;
    end if;
end
$$;

create or replace function ledger_entries_balance_alerts() returns trigger
language plpgsql as $$
begin
    perform note_balance_alerts(new.company_id, new.balance_before_nanos, new.balance_after_nanos, new.sequence);
    return null;
end
$$;

create or replace trigger ledger_entries_balance_alerts after insert on ledger_entries
    for each row when (new.balance_before_nanos <> new.balance_after_nanos
                       and current_setting('billing.balance_alerts_noted', true) is distinct from 'on')
    execute function ledger_entries_balance_alerts();
