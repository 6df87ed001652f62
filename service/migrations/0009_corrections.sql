-- Corrections: a usage record voided in full or in part (VoidUsageRecord), and a manual debit
-- (DebitWallet) beside the manual credit. The ledger stays append-only: a correction is a new entry that
-- references what it corrects.
alter table ledger_entries drop constraint ledger_entries_entry_type_check;
alter table ledger_entries add constraint ledger_entries_entry_type_check check (entry_type in (
    'usage_debit', 'recharge_credit', 'preload_credit', 'manual_credit', 'adjustment', 'usage_void',
    'manual_debit'));
-- A void gives money back for the usage record it names; a manual debit takes money.
alter table ledger_entries add constraint ledger_entries_usage_void_names_its_record
    check (entry_type <> 'usage_void' or (amount_nanos > 0 and usage_record_id is not null));
alter table ledger_entries add constraint ledger_entries_manual_debit_is_negative
    check (entry_type <> 'manual_debit' or amount_nanos < 0);

-- Manual debits live beside the manual credits, under the same request-id rule, with a negative amount.
alter table wallet_credits drop constraint wallet_credits_entry_type_check;
alter table wallet_credits drop constraint wallet_credits_amount_nanos_check;
alter table wallet_credits add constraint wallet_credits_entry_type_check
    check (entry_type in ('manual_credit', 'adjustment', 'manual_debit'));
alter table wallet_credits add constraint wallet_credits_amount_sign
    check (amount_nanos <> 0 and (entry_type = 'manual_debit') = (amount_nanos < 0));

-- A per-company key for the usage records, so that per-company tables can refer to one with company_id.
create unique index usage_records_company_record on usage_records (company_id, usage_record_id);

-- VoidUsageRecord's voids, idempotent under (company_id, request_id). The voids of one record never add
-- up to more than its amount (checked under the wallet lock by void_usage_record()).
create table usage_voids (
    company_id          text not null,
    request_id          text not null check (length(request_id) between 1 and 255),
    usage_record_id     uuid not null,
    amount_nanos        bigint not null check (amount_nanos > 0),
    reason              text not null,
    actor               text not null,
    ledger_sequence     bigint not null,
    balance_after_nanos bigint not null,
    created_at          timestamptz not null default now(),
    primary key (company_id, request_id),
    foreign key (company_id, usage_record_id) references usage_records (company_id, usage_record_id),
    foreign key (company_id, ledger_sequence) references ledger_entries (company_id, sequence)
);
create index usage_voids_by_record on usage_voids (company_id, usage_record_id);
