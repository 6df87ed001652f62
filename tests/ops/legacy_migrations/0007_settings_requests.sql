-- 0007: idempotency for SettingsService mutations (UpdateBillingSettings, StartCardSetup, SetDefaultCard,
-- RemoveCard). The first response for a (company, request id) is kept and returned on a retry; the same
-- request id with a different request is refused. The defaults of 0002 are kept as they are.
--
-- `response` is the serialized gRPC response. StartCardSetup stores none: its response holds the
-- SetupIntent's client secret, which is never stored; a retry asks the provider again under the same
-- idempotency key and gets the same SetupIntent back.

create table settings_requests (
    company_id   text not null references companies (company_id),
    request_id   text not null,
    operation    text not null,
    request_hash bytea not null,
    response     bytea,
    created_at   timestamptz not null default now(),
    primary key (company_id, request_id)
);
