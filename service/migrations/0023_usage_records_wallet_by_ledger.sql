-- A usage record's wallet is already enforced through its ledger entry: usage_records references
-- ledger_entries (company_id, ledger_sequence), which references wallets. The direct reference to
-- wallets checked the same row again for every record (a lookup and a row lock per record in a batch).
alter table usage_records drop constraint usage_records_company_id_fkey;
