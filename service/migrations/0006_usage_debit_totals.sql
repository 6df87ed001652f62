-- Running totals of usage debits, so that GetStatement reads a month in constant cost.
--
-- Per company, rate key and 15-minute UTC bucket of the debit's ledger time (ledger_entries.created_at,
-- non-decreasing along each wallet's sequence): the totals of every debit of that rate key posted before
-- the bucket's end. A month's debits of a rate key are then the row before the month's end minus the row
-- before its start: two index probes per rate key, however many debits the month has. Kept by the triggers
-- in service/sql/usage_debit_totals_apply.sql, in the debit's transaction.
create table usage_debit_totals (
    company_id          text not null references wallets (company_id),
    rate_key            text not null,
    bucket_start        timestamptz not null,
    record_count        bigint not null,
    quantity            bigint not null,
    billable_units      bigint not null,
    -- The ledger's amounts (debits are negative), so a statement ties out with the ledger exactly.
    ledger_amount_nanos bigint not null,
    primary key (company_id, rate_key, bucket_start)
);
comment on table usage_debit_totals is
    'Running totals of usage debits per company and rate key, at the end of each 15-minute UTC bucket of ledger time; maintained by triggers.';

insert into usage_debit_totals (company_id, rate_key, bucket_start, record_count, quantity, billable_units,
                                ledger_amount_nanos)
select company_id, rate_key, bucket_start,
       sum(n) over w, sum(q) over w, sum(b) over w, sum(a) over w
  from (select r.company_id, r.rate_key,
               date_bin('15 minutes', e.created_at, timestamptz '2000-01-01 00:00:00+00') as bucket_start,
               count(*) as n, sum(r.quantity) as q, sum(r.billable_units) as b, sum(e.amount_nanos) as a
          from usage_records r
          join ledger_entries e on e.company_id = r.company_id and e.sequence = r.ledger_sequence
         group by 1, 2, 3) per_bucket
window w as (partition by company_id, rate_key order by bucket_start);

-- A statement lists a month's other entries (credits, adjustments) one by one; this keeps that read
-- proportional to them, not to the month's debits.
create index ledger_entries_not_usage on ledger_entries (company_id, sequence)
    where entry_type <> 'usage_debit';
