-- Top up to a target: a recharge may bring the balance up to target_balance instead of adding
-- recharge_amount (whole cents, like every card amount).
alter table billing_settings add column recharge_mode text not null default 'fixed_amount'
    check (recharge_mode in ('fixed_amount', 'top_up_to_target'));
alter table billing_settings add column target_balance_nanos bigint
    check (target_balance_nanos is null or (target_balance_nanos > 0 and target_balance_nanos % 10000000 = 0));
alter table billing_settings add constraint billing_settings_top_up_has_target
    check (recharge_mode <> 'top_up_to_target' or target_balance_nanos is not null);
