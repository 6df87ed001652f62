-- 0012: every per-company table is keyed by company_id, so that it can be distributed by company_id
-- (Citus; docs/scaling.md): primary keys, unique constraints and unique indexes include company_id,
-- and so does every foreign key between per-company tables. tests/db/test_shard_readiness.py holds
-- the schema to it. recharge_attempts' own key follows in 0015, after 0014 has made a foreign key onto
-- its attempt_id.

-- Foreign keys onto the primary keys that change go first, and come back on the new keys.
alter table holds drop constraint holds_usage_record_id_fkey;

alter table usage_records drop constraint usage_records_pkey,
    add constraint usage_records_pkey primary key (company_id, usage_record_id);
alter table holds drop constraint holds_pkey,
    add constraint holds_pkey primary key (company_id, hold_id);
alter table settings_changes drop constraint settings_changes_pkey,
    add constraint settings_changes_pkey primary key (company_id, change_id);
alter table wallet_events drop constraint wallet_events_pkey,
    add constraint wallet_events_pkey primary key (company_id, event_id);

alter table holds add constraint holds_usage_record_id_fkey
    foreign key (company_id, usage_record_id) references usage_records (company_id, usage_record_id);

-- A PaymentIntent belongs to one Stripe customer, so to one company: unique within the company is the
-- same guarantee, and one a shard can enforce alone.
alter table recharge_attempts drop constraint recharge_attempts_payment_intent_id_key,
    add constraint recharge_attempts_payment_intent_id_key unique (company_id, payment_intent_id);
drop index ledger_entries_one_credit_per_attempt;
create unique index ledger_entries_one_credit_per_attempt on ledger_entries (company_id, recharge_attempt_id)
    where recharge_attempt_id is not null;
drop index ledger_entries_one_credit_per_payment_intent;
create unique index ledger_entries_one_credit_per_payment_intent on ledger_entries (company_id, reference)
    where entry_type in ('recharge_credit', 'preload_credit');

-- A create request id is scoped to its company, like every other request id (idempotency_keys is keyed
-- by company and request id); a uniqueness across companies is not one a shard could check.
alter table companies drop constraint companies_create_request_id_key;
-- The Stripe customer id is Stripe's, unique by construction, and only ever read by company.
alter table payment_customers drop constraint payment_customers_provider_customer_id_key;
-- Rate cards are reference tables (copied to every node, as every debit prices from them), and a
-- reference table cannot hold a foreign key onto a distributed one.
alter table rate_cards drop constraint rate_cards_company_id_fkey;
