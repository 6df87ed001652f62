-- Many RecordUsage requests in one transaction and one round trip: the set-based form of record_usage(),
-- giving each item exactly the result record_usage() would give it if the items ran one after another in
-- array order. Arrays are parallel, one element per item (item = 1-based position).
--
-- Returns one row per item:
--   'recorded'  record is the new usage record (its id is the one proposed);
--   'existing'  the company's key was used before: record is the stored one, and the caller compares
--               request_hash (a replay, or IDEMPOTENCY_KEY_REUSED), as with record_usage();
--   'failed'    error_state / error_message are what record_usage() raises: BL404 (no wallet), BL412 (no
--               rate), BLH04 / BLH09 / BLH10 (the hold), 22003 (the amount or balance out of range);
--   'deferred'  not judged in this call (an overflow earlier in its wallet's run): call again for it.
-- The caller gives each (company, key) and each hold at most once per call; a repeat is judged against the
-- first item's outcome by the caller (the usage batcher), which keeps both rules in one place.
--
-- Each wallet is locked once, in company_id order, so that two concurrent calls (two flushers, two
-- replicas) cannot deadlock on each other's wallets. Everything else is a handful of set statements: the
-- price once per (company, rate key) when no card version starts inside the batch's time span, the ledger
-- run of each wallet with its running balances and sequences, the records (the rollup trigger fires once
-- per statement), the holds, and one update per wallet. The below-minimum event and NOTIFY fire once per
-- crossing and a suspension flip emits its event with the balance of the entry that crossed, in the same
-- order per wallet as one record_usage() call after another.
create or replace function record_usages(
    p_usage_record_ids uuid[], p_company_ids text[], p_idempotency_keys text[], p_request_hashes bytea[],
    p_usage_types text[], p_rate_keys text[], p_directions text[], p_number_types text[],
    p_quantities bigint[], p_sms_encodings text[], p_billable_units bigint[], p_occurred_ats timestamptz[],
    p_hold_ids uuid[])
returns table (item integer, outcome text, error_state text, error_message text, record usage_records)
language plpgsql
as $$
#variable_conflict use_column
declare
    v_plan       usage_records[];
    v_created    timestamptz[];
    v_hold_ids   uuid[];
    v_hold_uses  uuid[];
    v_items      integer[];
    v_outcomes   text[];
    v_states     text[];
    v_messages   text[];
    v_record_ids uuid[];
    v_used       uuid[];
    v_plan_mode  text := current_setting('plan_cache_mode');
    -- A small call (most of RecordUsage's group commits on a busy server hold a few items) runs on
    -- generic plans: planning its statements afresh cost more than running them (about 2 of the 4.5 ms
    -- of backend CPU a one-item call took). A larger one lets Postgres choose, as each call's own plan
    -- then pays for itself (generic plans made a call of 1,000 items slower).
    v_mode       text := case when cardinality(p_company_ids) <= 8 then 'force_generic_plan'
                              else v_plan_mode end;
    v_event      record;
begin
    perform set_config('plan_cache_mode', v_mode, true);
    perform 1 from wallets where company_id = any(p_company_ids) order by company_id for update;

    -- A fresh snapshot from here on: every earlier commit on these wallets is visible (READ COMMITTED).
    -- The records already stored under the items' keys, one index probe per item (limit 1 keeps the
    -- planner from reading the whole table into a hash join for a large batch). This statement is
    -- planned for each call: a generic plan, cached in the session while the table was nearly empty (a
    -- new database, before autovacuum's first ANALYZE), took the primary key, which also leads with
    -- company_id, and read every record of the wallet for each item, so that each batch on a hot wallet
    -- was slower than the one before (1,000 items took seconds). The other statements run in the mode
    -- chosen above.
    perform set_config('plan_cache_mode', 'force_custom_plan', true);
    select array_agg(used.usage_record_id order by k.item) into v_used
      from unnest(p_company_ids, p_idempotency_keys) with ordinality as k(company_id, idempotency_key, item)
      left join lateral (select u.usage_record_id from usage_records u
                          where u.company_id = k.company_id and u.idempotency_key = k.idempotency_key
                          limit 1) used
             on true;
    perform set_config('plan_cache_mode', v_mode, true);

    with items as (
        select *
          from unnest(p_usage_record_ids, p_company_ids, p_idempotency_keys, p_request_hashes, p_usage_types,
                      p_rate_keys, p_directions, p_number_types, p_quantities, p_sms_encodings,
                      p_billable_units, p_occurred_ats, p_hold_ids) with ordinality
               as i(usage_record_id, company_id, idempotency_key, request_hash, usage_type, rate_key,
                    direction, number_type, quantity, sms_encoding, billable_units, occurred_at, hold_id,
                    item)
    ),
    locked as materialized (
        -- The ledger-time rule for a run: its entries are no earlier than the wallet's last entry (one
        -- probe per wallet: limit 1 keeps the planner from scanning the ledger for a join).
        select w.company_id, w.balance_nanos, w.last_sequence, w.minimum_balance_nanos,
               greatest(now(), last.created_at) as posted_at
          from wallets w
          left join lateral (select e.created_at from ledger_entries e
                              where e.company_id = w.company_id and e.sequence = w.last_sequence limit 1) last on true
         where w.company_id = any(p_company_ids)
    ),
    spans as (
        select company_id, rate_key, min(occurred_at) as first_at, max(occurred_at) as last_at
          from items group by company_id, rate_key
    ),
    span_rates as materialized (
        -- One price per (company, rate key), unless a card version of the company or the default starts
        -- inside the span: then each item is priced at its own moment (materialized, so that the
        -- planner does not price each item anyway).
        select s.company_id, s.rate_key, r.unit_price_nanos, r.rate_card, r.rate_card_version,
               exists (select 1 from rate_cards c
                        where (c.company_id = s.company_id or c.company_id is null)
                          and c.effective_from > s.first_at and c.effective_from <= s.last_at) as varies
          from spans s
          cross join lateral effective_rate(s.company_id, s.rate_key, s.last_at) r
    ),
    priced as (
        -- (Each column of the rare per-item price is its own lookup: a record cannot be carried here.)
        select i.*,
               case when sr.varies then (select r.unit_price_nanos
                                           from effective_rate(i.company_id, i.rate_key, i.occurred_at) r)
                    else sr.unit_price_nanos end as unit_price_nanos,
               case when sr.varies then (select r.rate_card
                                           from effective_rate(i.company_id, i.rate_key, i.occurred_at) r)
                    else sr.rate_card end as rate_card,
               case when sr.varies then (select r.rate_card_version
                                           from effective_rate(i.company_id, i.rate_key, i.occurred_at) r)
                    else sr.rate_card_version end as rate_card_version
          from items i join span_rates sr on sr.company_id = i.company_id and sr.rate_key = i.rate_key
    ),
    judged as (
        select i.usage_record_id, i.company_id, i.idempotency_key, i.request_hash, i.usage_type, i.rate_key,
               i.direction, i.number_type, i.quantity, i.sms_encoding, i.billable_units, i.occurred_at,
               i.hold_id, i.item, l.balance_nanos, l.last_sequence, l.minimum_balance_nanos, l.posted_at,
               i.unit_price_nanos, i.rate_card, i.rate_card_version,
               v_used[i.item] as used_record_id, h.state as hold_state,
               h.usage_record_id as hold_record_id,
               case
                   when l.company_id is null then 'BL404'
                   when v_used[i.item] is not null then 'existing'
                   when i.unit_price_nanos is null then 'BL412'
                   when i.hold_id is not null and h.state is null then 'BLH04'
                   when h.state = 'captured' then 'BLH09'
                   when h.state = 'released' then 'BLH10'
                   when i.billable_units::numeric * i.unit_price_nanos > 9223372036854775807
                        then '22003'
               end as verdict
          from priced i
          left join locked l on l.company_id = i.company_id
          -- Lateral lookups (limit 1 keeps the planner from turning them into joins): one index probe per
          -- item, whatever the planner guesses of the arrays' size.
          left join lateral (select h.state, h.usage_record_id
                               from (select * from holds where hold_id = i.hold_id limit 1) h
                              where h.company_id = i.company_id) h on true
    ),
    runs as (
        -- Each wallet's debits in item order, with the balance after each (a partition of the items that
        -- passed the checks; the others ride along in a partition of their own, so that the judged items
        -- are read once, and never joined back to themselves).
        select j.*, case when j.verdict is null then j.billable_units * j.unit_price_nanos end as amount_nanos,
               j.balance_nanos - sum(j.billable_units::numeric * j.unit_price_nanos)
                   over (partition by j.company_id, j.verdict is null order by j.item) as after_nanos,
               row_number() over (partition by j.company_id, j.verdict is null order by j.item) as n
          from judged j
    ),
    bounded as (
        -- A balance a bigint cannot hold fails that item as record_usage() would; the wallet's later
        -- items wait for the next call, which sees the balance without it.
        select r.*, min(r.item) filter (where r.verdict is null and r.after_nanos < -9223372036854775808)
                        over (partition by r.company_id) as first_overflow
          from runs r
    ),
    outcome as (
        select b.*,
               coalesce(b.verdict,
                        case when b.first_overflow is null or b.item < b.first_overflow then 'recorded'
                             when b.item = b.first_overflow and b.n = 1 then '22003'
                             else 'deferred' end) as final_verdict
          from bounded b
    ),
    planned as (
        select o.* from outcome o where o.final_verdict = 'recorded'
    )
    select
        (select array_agg(row(p.usage_record_id, p.company_id, p.idempotency_key, p.request_hash,
                              p.usage_type, p.rate_key, p.direction, p.number_type, p.quantity,
                              p.sms_encoding, p.billable_units, p.unit_price_nanos, p.amount_nanos,
                              p.rate_card, p.rate_card_version, p.occurred_at, now(),
                              p.last_sequence + p.n, p.after_nanos::bigint,
                              p.after_nanos < p.minimum_balance_nanos)::usage_records order by p.item)
           from planned p),
        (select array_agg(p.posted_at order by p.item) from planned p),
        (select array_agg(p.hold_id order by p.item) from planned p where p.hold_id is not null),
        (select array_agg(p.usage_record_id order by p.item) from planned p
          where p.hold_id is not null),
        array_agg(o.item order by o.item),
        array_agg(case when o.final_verdict in ('recorded', 'existing', 'deferred') then o.final_verdict
                       else 'failed' end order by o.item),
        array_agg(case when o.final_verdict in ('recorded', 'existing', 'deferred') then null
                       else o.final_verdict end order by o.item),
        array_agg(case o.final_verdict
                      when 'BL404' then format('company %s has no wallet', o.company_id)
                      when 'BL412' then format('no rate card has a %s rate in effect at %s', o.rate_key,
                                               o.occurred_at)
                      when 'BLH04' then format('hold %s not found for company %s', o.hold_id, o.company_id)
                      when 'BLH09' then format('hold %s was already captured by usage record %s', o.hold_id,
                                               o.hold_record_id)
                      when 'BLH10' then format('hold %s was released; record the usage without hold_id',
                                               o.hold_id)
                      when '22003' then 'bigint out of range'
                  end order by o.item),
        array_agg(case o.final_verdict when 'recorded' then o.usage_record_id when 'existing' then o.used_record_id
                  end order by o.item)
      into v_plan, v_created, v_hold_ids, v_hold_uses, v_items, v_outcomes, v_states, v_messages,
           v_record_ids
      from outcome o;

    if v_plan is not null then
        -- The run's created_at already obeys the ledger-time rule (see ledger_entries_monotonic_time.sql),
        -- so its per-row trigger is skipped for this one statement.
        -- Its balance alerts are noted set-based just below, so the per-row trigger is skipped too.
        perform set_config('billing.ledger_time_checked', 'on', true);
        perform set_config('billing.balance_alerts_noted', 'on', true);
        insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                    balance_after_nanos, usage_record_id, reference, description,
                                    recharge_attempt_id, created_at)
        select p.company_id, p.ledger_sequence, 'usage_debit', -p.amount_nanos,
               p.balance_after_nanos + p.amount_nanos, p.balance_after_nanos, p.usage_record_id, null, '',
               null, p.posted_at
          from rows from (unnest(v_plan), unnest(v_created))
               as p(usage_record_id, company_id, idempotency_key, request_hash, usage_type, rate_key,
                    direction, number_type, quantity, sms_encoding, billable_units, unit_price_nanos,
                    amount_nanos, rate_card, rate_card_version, occurred_at, recorded_at, ledger_sequence,
                    balance_after_nanos, below_minimum, posted_at);
        perform set_config('billing.ledger_time_checked', '', true);
        perform set_config('billing.balance_alerts_noted', '', true);

        -- Balance alerts, as note_balance_alerts() would give them entry by entry: a run's balances only
        -- fall, so each threshold still above the balance is crossed by at most one entry of the run,
        -- the one with balance before >= threshold > balance after. Events in entry order, the higher
        -- threshold first, as the per-row trigger emits them at the end of the insert above.
        for v_event in
            with entries as (
                select p.company_id, p.ledger_sequence, p.balance_after_nanos,
                       p.balance_after_nanos + p.amount_nanos as balance_before_nanos, p.position
                  from unnest(v_plan) with ordinality
                       as p(usage_record_id, company_id, idempotency_key, request_hash, usage_type, rate_key,
                            direction, number_type, quantity, sms_encoding, billable_units, unit_price_nanos,
                            amount_nanos, rate_card, rate_card_version, occurred_at, recorded_at,
                            ledger_sequence, balance_after_nanos, below_minimum, position)
                 where p.amount_nanos > 0),
            crossed as (
                select e.*, t.threshold_nanos
                  from entries e
                  join balance_alert_thresholds t
                    on t.company_id = e.company_id and not t.below
                   and t.threshold_nanos <= e.balance_before_nanos and t.threshold_nanos > e.balance_after_nanos),
            marked as (
                update balance_alert_thresholds t set below = true
                  from crossed c
                 where t.company_id = c.company_id and t.threshold_nanos = c.threshold_nanos)
            select * from crossed order by position, threshold_nanos desc
        loop
            perform emit_wallet_event(v_event.company_id, 'balance_alert', jsonb_build_object(
                'threshold_nanos', v_event.threshold_nanos, 'balance_nanos', v_event.balance_after_nanos,
                'balance_before_nanos', v_event.balance_before_nanos, 'ledger_sequence', v_event.ledger_sequence));
        end loop;

        insert into usage_records select * from unnest(v_plan);

        if v_hold_ids is not null then
            update holds h set state = 'captured', captured_at = now(), usage_record_id = c.usage_record_id
              from unnest(v_hold_ids, v_hold_uses) as c(hold_id, usage_record_id)
              join unnest(v_plan) p on p.usage_record_id = c.usage_record_id
             where h.company_id = p.company_id and h.hold_id = c.hold_id;
        end if;

        -- Events, per wallet in ledger order: a suspension flip (its trigger on wallets emits it when the
        -- row moves to the entry that crossed) before a below-minimum crossing at the same entry.
        for v_event in
            select * from (
                select p.company_id, p.ledger_sequence, 0 as kind, p.usage_record_id, p.balance_after_nanos,
                       w.minimum_balance_nanos
                  from unnest(v_plan) p join wallets w using (company_id)
                 where (not w.has_card or w.last_recharge_failed)
                   and p.balance_after_nanos + p.amount_nanos > -w.credit_limit_nanos
                   and p.balance_after_nanos <= -w.credit_limit_nanos
                union all
                select p.company_id, p.ledger_sequence, 1, p.usage_record_id, p.balance_after_nanos,
                       w.minimum_balance_nanos
                  from unnest(v_plan) p join wallets w using (company_id)
                 where p.balance_after_nanos + p.amount_nanos >= w.minimum_balance_nanos
                   and p.balance_after_nanos < w.minimum_balance_nanos) crossings
             order by company_id, ledger_sequence, kind
        loop
            if v_event.kind = 0 then
                update wallets
                   set balance_nanos = v_event.balance_after_nanos, last_sequence = v_event.ledger_sequence,
                       updated_at = now()
                 where company_id = v_event.company_id;
            else
                perform emit_wallet_event(v_event.company_id, 'balance_below_minimum', jsonb_build_object(
                    'balance_nanos', v_event.balance_after_nanos,
                    'minimum_balance_nanos', v_event.minimum_balance_nanos,
                    'usage_record_id', v_event.usage_record_id, 'ledger_sequence', v_event.ledger_sequence));
                perform pg_notify('wallet_below_minimum', v_event.company_id);
            end if;
        end loop;

        update wallets w
           set balance_nanos = last.balance_after_nanos, last_sequence = last.ledger_sequence, updated_at = now()
          from (select distinct on (company_id) company_id, balance_after_nanos, ledger_sequence
                  from unnest(v_plan) order by company_id, ledger_sequence desc) last
         where w.company_id = last.company_id;
    end if;

    return query
        -- A new record as planned (it is what was inserted), an earlier one as stored.
        select a.item, a.outcome, a.error_state, a.error_message,
               case a.outcome
                   when 'recorded' then p
                   when 'existing' then (select u from usage_records u
                                         where u.company_id = p_company_ids[a.item]
                                           and u.usage_record_id = a.record_id)
               end
          from unnest(v_items, v_outcomes, v_states, v_messages, v_record_ids)
               as a(item, outcome, error_state, error_message, record_id)
          left join unnest(v_plan) p on p.usage_record_id = a.record_id and a.outcome = 'recorded'
         order by a.item;
    perform set_config('plan_cache_mode', v_plan_mode, true);
end
$$;
