-- Keeps usage_rollups equal to the sums of usage_records: one upsert per statement on the hot path.
-- RecordUsage already holds the company's wallet row lock when it inserts the record, so the rollup row
-- adds no new contention; the updated columns are not indexed, so the updates are HOT. The triggers are
-- on usage_records, not in record_usage(), so the rollup stays correct whatever writes the records.
-- Updates and deletes of records (none today) are applied too, so the rollup can never drift.
--
-- One function for the insert and update triggers; each branch reads only the transition tables its
-- event provides (PL/pgSQL plans a statement when it first runs it).
create or replace function usage_rollups_apply() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into usage_rollups as u (company_id, bucket_start, rate_key, record_count, quantity,
                                         billable_units, amount_nanos)
        select company_id, usage_rollup_bucket(occurred_at), rate_key, count(*), sum(quantity),
               sum(billable_units), sum(amount_nanos)
          from new_records
         group by 1, 2, 3
        on conflict (company_id, bucket_start, rate_key) do update
           set record_count = u.record_count + excluded.record_count,
               quantity = u.quantity + excluded.quantity,
               billable_units = u.billable_units + excluded.billable_units,
               amount_nanos = u.amount_nanos + excluded.amount_nanos;
    else
        insert into usage_rollups as u (company_id, bucket_start, rate_key, record_count, quantity,
                                         billable_units, amount_nanos)
        select company_id, bucket_start, rate_key, sum(n), sum(q), sum(b), sum(a)
          from (select company_id, usage_rollup_bucket(occurred_at) as bucket_start, rate_key,
                       -1 as n, -quantity as q, -billable_units as b, -amount_nanos as a
                  from old_records
                 union all
                select company_id, usage_rollup_bucket(occurred_at), rate_key,
                       1, quantity, billable_units, amount_nanos
                  from new_records where tg_op = 'UPDATE') changes
         group by 1, 2, 3
        on conflict (company_id, bucket_start, rate_key) do update
           set record_count = u.record_count + excluded.record_count,
               quantity = u.quantity + excluded.quantity,
               billable_units = u.billable_units + excluded.billable_units,
               amount_nanos = u.amount_nanos + excluded.amount_nanos;
        delete from usage_rollups where record_count = 0
           and (company_id, bucket_start, rate_key) in (
               select company_id, usage_rollup_bucket(occurred_at), rate_key from old_records);
    end if;
    return null;
end
$$;

create or replace trigger usage_rollups_on_insert after insert on usage_records
    referencing new table as new_records
    for each statement execute function usage_rollups_apply();
create or replace trigger usage_rollups_on_update after update on usage_records
    referencing old table as old_records new table as new_records
    for each statement execute function usage_rollups_apply();
