-- Balance alerts: a company's thresholds (SettingsService, at most 5, checked there), each with whether
-- the balance is below it now, so a crossing alerts once and the way back resolves it once.
create table balance_alert_thresholds (
    company_id      text not null references wallets (company_id),
    threshold_nanos bigint not null check (threshold_nanos >= 0),
    -- The balance is below the threshold: balance_alert was emitted (or the threshold was set above the
    -- balance); balance_alert_resolved clears it.
    below           boolean not null,
    created_at      timestamptz not null default now(),
    primary key (company_id, threshold_nanos)
);
