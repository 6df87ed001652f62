-- One idempotency mechanism off the hot path (service/app/idempotency.py): every mutation but RecordUsage
-- claims its (company, request id) here, in its own transaction; the first request's result is kept.
create table idempotency_keys (
    company_id   text not null,
    request_id   text not null check (length(request_id) between 1 and 255),
    operation    text not null,
    request_hash bytea not null,
    -- The domain result a replay returns (JSON), for operations that keep one.
    result       jsonb,
    created_at   timestamptz not null default now(),
    primary key (company_id, request_id)
);

insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, request_id, 'credit_wallet', request_hash, created_at from wallet_credits;
insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, request_id, 'authorize_usage', request_hash, created_at from holds;
insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, request_id, operation, request_hash, created_at from settings_requests
    on conflict do nothing;
insert into idempotency_keys (company_id, request_id, operation, request_hash, created_at)
select company_id, create_request_id, 'create_wallet',
       -- idempotency.fingerprint(company_id, display_name): length-tagged parts, SHA-256.
       sha256(convert_to(octet_length(convert_to(company_id, 'UTF8')) || ':' || company_id
                         || octet_length(convert_to(display_name, 'UTF8')) || ':' || display_name, 'UTF8')),
       created_at
  from companies
    on conflict do nothing;

drop table settings_requests;
-- Both now return the key's claim beside their result: a new signature, so the old ones go.
drop function if exists credit_wallet(text, text, bytea, text, bigint, text, text);
drop function if exists authorize_usage(uuid, text, text, bytea, text, text, bigint, interval);
alter table wallet_credits drop column request_hash;
alter table holds drop column request_hash;
