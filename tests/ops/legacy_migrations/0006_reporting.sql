-- 0006: what the dashboard's reports read (service/app/reporting/).
--
-- 1. usage_rollups: per company, per 15-minute UTC bucket, per rate key: record count, quantity, billable
--    units and amount. GetUsageSummary sums these instead of the records, so a month costs at most
--    2,976 buckets x 7 rate keys (~21k rows) whether the company had 1,000 or 10 million records in it.
--    Why a rollup rather than a covering index on usage_records (company_id, occurred_at) INCLUDE (...):
--    the index still reads every record (a 1M-record month is an index-only scan plus a 1M-row aggregate,
--    roughly 0.3-1 s on a small machine, and index-only only once the visibility map is set), while the
--    rollup reads ~21k rows. Why 15 minutes rather than an hour: every time zone in use today has an
--    offset that is a whole number of quarter hours (Asia/Kolkata +5:30, Asia/Kathmandu +5:45,
--    Pacific/Chatham +12:45), so every local day and month starts on a bucket boundary. A boundary that
--    does not (a historical local-mean-time offset, or a request range starting at 10:07) is still exact:
--    the summary reads the raw records of the one straddled bucket on each side (see summaries.py).
--    Cost on the hot path: one statement-level trigger per INSERT into usage_records doing one upsert of
--    one row. RecordUsage already holds the company's wallet row lock when it inserts the record, so the
--    rollup row adds no new contention; the updated columns are not indexed, so the updates are HOT.
--    The trigger is on usage_records, not in record_usage(), so redefinitions of that function (other
--    migrations) keep the rollup correct without copying this logic. Updates and deletes of records
--    (none today) are applied too, so the rollup can never drift from the records.
--
-- 2. usage_records_by_occurrence: ListUsageRecords pages through a company's records by
--    (occurred_at, usage_record_id) with keyset tokens, and the summary reads straddled buckets by time.
--
-- 3. Ledger time is made non-decreasing along each wallet's sequence. created_at defaults to now(), the
--    transaction's start, and a transaction that waited for the wallet lock can get a later sequence
--    than one that started after it. A trigger moves such an entry's created_at up to its predecessor's
--    (a moment that is still inside the inserting transaction, since the predecessor committed before this
--    one got the lock). Then "the entries before instant t" is a prefix of the sequence, found with one
--    index probe, and a statement's opening balance is exactly balance_after_nanos of the last entry of
--    that prefix: months chain exactly, and an export's rows sum to the balance movement. Entries already
--    written are brought under the same rule once, below.

create table usage_rollups (
    company_id     text not null,
    bucket_start   timestamptz not null,
    rate_key       text not null,
    record_count   bigint not null,
    quantity       bigint not null,
    billable_units bigint not null,
    amount_nanos   bigint not null,
    primary key (company_id, bucket_start, rate_key)
);

comment on table usage_rollups is
    'Sums of usage_records per company, 15-minute UTC bucket of occurred_at and rate key; maintained by triggers.';

create function usage_rollup_bucket(p_at timestamptz) returns timestamptz
language sql immutable parallel safe as $$
    select date_bin('15 minutes', p_at, timestamptz '2000-01-01 00:00:00+00')
$$;

-- One function for the three statement-level triggers; each branch reads only the transition tables its
-- event provides (PL/pgSQL plans a statement when it first runs it).
create function usage_rollups_apply() returns trigger
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

create function usage_rollups_apply_delete() returns trigger
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

create trigger usage_rollups_on_insert after insert on usage_records
    referencing new table as new_records
    for each statement execute function usage_rollups_apply();
create trigger usage_rollups_on_update after update on usage_records
    referencing old table as old_records new table as new_records
    for each statement execute function usage_rollups_apply();
create trigger usage_rollups_on_delete after delete on usage_records
    referencing old table as old_records
    for each statement execute function usage_rollups_apply_delete();

-- Records that exist before this migration.
insert into usage_rollups (company_id, bucket_start, rate_key, record_count, quantity, billable_units,
                           amount_nanos)
select company_id, usage_rollup_bucket(occurred_at), rate_key, count(*), sum(quantity), sum(billable_units),
       sum(amount_nanos)
  from usage_records
 group by 1, 2, 3;

create index usage_records_by_occurrence on usage_records (company_id, occurred_at, usage_record_id);

-- Ledger time, non-decreasing per wallet (see 3. above).
create function ledger_entries_monotonic_time() returns trigger
language plpgsql as $$
declare
    v_previous timestamptz;
begin
    select created_at into v_previous from ledger_entries
     where company_id = new.company_id and sequence = new.sequence - 1;
    if v_previous > new.created_at then
        new.created_at := v_previous;
    end if;
    return new;
end
$$;

create trigger ledger_entries_monotonic_time before insert on ledger_entries
    for each row execute function ledger_entries_monotonic_time();

-- No ledger entry predates this trigger in any deployment: migrations 0001-0006 are first released
-- together. So the append-only ledger is never rewritten to re-time old entries; should a database ever
-- need it, that is a reconciliation job for an operator, not a silent migration.

-- "The last entry before t" and "entries in [t1, t2)" for statements and exports: one index probe.
create index ledger_entries_by_time on ledger_entries (company_id, created_at, sequence);
