-- Keeps usage_debit_totals (see migration 0006_usage_debit_totals) equal to the running sums of usage_records' debits.
--
-- Inserts, the hot path: one upsert per statement. A new bucket row starts from the latest row of its
-- company and rate key; the bucket a debit lands in is never before that row's, because ledger time is
-- non-decreasing along the wallet's sequence (ledger_entries_monotonic_time) and the wallet row lock
-- orders debits. A debit that would land before it is refused rather than silently miscounted.
-- Updates and deletes of records (none in the service) rebuild the series they touch, so the totals can
-- never drift.
--
-- The triggers are on usage_records, so every path that writes a record (record_usage(), a batch of
-- them) keeps the totals without calling anything.
create or replace function usage_debit_totals_apply() returns trigger
language plpgsql as $$
declare
    v_out_of_order bigint;
    v_companies    text[];
    v_rate_keys    text[];
begin
    if tg_op = 'INSERT' then
        with per_bucket as (
            select r.company_id, r.rate_key, usage_rollup_bucket(e.created_at) as bucket_start,
                   count(*) as n, sum(r.quantity) as q, sum(r.billable_units) as b, sum(e.amount_nanos) as a
              from new_records r
              join ledger_entries e on e.company_id = r.company_id and e.sequence = r.ledger_sequence
             group by 1, 2, 3
        ), based as (
            select d.*, p.bucket_start as base_bucket,
                   coalesce(p.record_count, 0) as n0, coalesce(p.quantity, 0) as q0,
                   coalesce(p.billable_units, 0) as b0, coalesce(p.ledger_amount_nanos, 0) as a0
              from per_bucket d
              left join lateral (
                  select t.bucket_start, t.record_count, t.quantity, t.billable_units, t.ledger_amount_nanos
                    from usage_debit_totals t
                   where t.company_id = d.company_id and t.rate_key = d.rate_key
                   order by t.bucket_start desc limit 1) p on true
        ), upserted as (
            insert into usage_debit_totals as t (company_id, rate_key, bucket_start, record_count, quantity,
                                                 billable_units, ledger_amount_nanos)
            select company_id, rate_key, bucket_start,
                   n0 + sum(n) over w, q0 + sum(q) over w, b0 + sum(b) over w, a0 + sum(a) over w
              from based
            window w as (partition by company_id, rate_key order by bucket_start)
            on conflict (company_id, rate_key, bucket_start) do update
               set record_count = excluded.record_count,
                   quantity = excluded.quantity,
                   billable_units = excluded.billable_units,
                   ledger_amount_nanos = excluded.ledger_amount_nanos
            returning 1
        )
        select count(*) filter (where base_bucket > bucket_start) into v_out_of_order
          from based, (select count(*) from upserted) as done;
        if v_out_of_order > 0 then
            raise exception 'a usage debit was posted before the latest running total of its rate key'
                using errcode = 'BLT01';
        end if;
        return null;
    end if;

    if tg_op = 'UPDATE' then
        select array_agg(company_id), array_agg(rate_key) into v_companies, v_rate_keys
          from (select company_id, rate_key from old_records
                union select company_id, rate_key from new_records) touched;
    else
        select array_agg(company_id), array_agg(rate_key) into v_companies, v_rate_keys
          from (select distinct company_id, rate_key from old_records) touched;
    end if;
    delete from usage_debit_totals t
     using unnest(v_companies, v_rate_keys) as k (company_id, rate_key)
     where t.company_id = k.company_id and t.rate_key = k.rate_key;
    insert into usage_debit_totals (company_id, rate_key, bucket_start, record_count, quantity,
                                    billable_units, ledger_amount_nanos)
    select company_id, rate_key, bucket_start, sum(n) over w, sum(q) over w, sum(b) over w, sum(a) over w
      from (select r.company_id, r.rate_key, usage_rollup_bucket(e.created_at) as bucket_start,
                   count(*) as n, sum(r.quantity) as q, sum(r.billable_units) as b, sum(e.amount_nanos) as a
              from unnest(v_companies, v_rate_keys) as k (company_id, rate_key)
              join usage_records r on r.company_id = k.company_id and r.rate_key = k.rate_key
              join ledger_entries e on e.company_id = r.company_id and e.sequence = r.ledger_sequence
             group by 1, 2, 3) per_bucket
    window w as (partition by company_id, rate_key order by bucket_start);
    return null;
end
$$;

create or replace trigger usage_debit_totals_on_insert after insert on usage_records
    referencing new table as new_records
    for each statement execute function usage_debit_totals_apply();
create or replace trigger usage_debit_totals_on_update after update on usage_records
    referencing old table as old_records new table as new_records
    for each statement execute function usage_debit_totals_apply();
create or replace trigger usage_debit_totals_on_delete after delete on usage_records
    referencing old table as old_records
    for each statement execute function usage_debit_totals_apply();
