-- API keys (service/app/api_keys.py): the secret is shown once at creation and stored only as its
-- SHA-256. Rows are never deleted: a revoked key stays, so `keys list` and the audit trails that name
-- it keep meaning something.
create table api_keys (
    key_id        text primary key check (key_id ~ '^key_[a-z2-7]{16}$'),
    name          text not null check (length(name) between 1 and 100),
    role          text not null
                  check (role in ('usage-writer', 'dashboard', 'finance', 'operator', 'admin')),
    -- The companies the key may touch; null means every company (never an empty array).
    companies     text[] check (companies is null or cardinality(companies) between 1 and 1000),
    secret_sha256 bytea not null unique check (length(secret_sha256) = 32),
    created_at    timestamptz not null default now(),
    created_by    text not null check (length(created_by) between 1 and 200),
    expires_at    timestamptz check (expires_at is null or expires_at > created_at),
    -- Written at most about once a minute per key and replica, not on every call.
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoked_by    text check ((revoked_at is null) = (revoked_by is null))
);
