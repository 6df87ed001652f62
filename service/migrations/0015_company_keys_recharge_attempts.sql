-- 0015: recharge_attempts keyed by (company_id, attempt_id) like every per-company table (see 0012),
-- with the foreign keys onto it, and stripe_webhook_reviews keyed by company too.

alter table ledger_entries drop constraint ledger_entries_recharge_attempt_id_fkey;
alter table stripe_webhook_reviews drop constraint stripe_webhook_reviews_attempt_id_fkey;

alter table recharge_attempts drop constraint recharge_attempts_pkey,
    add constraint recharge_attempts_pkey primary key (company_id, attempt_id);

alter table ledger_entries add constraint ledger_entries_recharge_attempt_id_fkey
    foreign key (company_id, recharge_attempt_id) references recharge_attempts (company_id, attempt_id);
alter table stripe_webhook_reviews add constraint stripe_webhook_reviews_attempt_id_fkey
    foreign key (company_id, attempt_id) references recharge_attempts (company_id, attempt_id);
alter table stripe_webhook_reviews drop constraint stripe_webhook_reviews_pkey,
    add constraint stripe_webhook_reviews_pkey primary key (company_id, event_id);

-- The recharge engine and the webhooks still find an attempt by its id or its PaymentIntent (the id
-- comes back in the PaymentIntent's metadata); these plain indexes keep those look-ups fast.
create index recharge_attempts_by_attempt_id on recharge_attempts (attempt_id);
create index recharge_attempts_by_payment_intent on recharge_attempts (payment_intent_id)
    where payment_intent_id is not null;
