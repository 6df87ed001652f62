-- The delete branch of usage_rollups_apply(), for the statement-level delete trigger on usage_records.
create or replace function usage_rollups_apply_delete() returns trigger
language plpgsql as $$
begin
    insert into usage_rollups as u (company_id, bucket_start, rate_key, record_count, quantity,
                                     billable_units, amount_nanos)
    select company_id, usage_rollup_bucket(occurred_at), rate_key, -count(*), -sum(quantity),
           -sum(billable_units), -sum(amount_nanos)
      from old_records
     group by 1, 2, 3
    on conflict (company_id, bucket_start, rate_key) do update
       set record_count = u.record_count + excluded.record_count,
           quantity = u.quantity + excluded.quantity,
           billable_units = u.billable_units + excluded.billable_units,
           amount_nanos = u.amount_nanos + excluded.amount_nanos;
    delete from usage_rollups where record_count = 0
       and (company_id, bucket_start, rate_key) in (
           select company_id, usage_rollup_bucket(occurred_at), rate_key from old_records);
    return null;
end
$$;

create or replace trigger usage_rollups_on_delete after delete on usage_records
    referencing old table as old_records
    for each statement execute function usage_rollups_apply_delete();
