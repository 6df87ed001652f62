-- 0017: a second card per company (role 'backup'), and recharge attempts that say which card they
-- charged and, for a fallback onto the backup, which primary attempt's recharge they carry on.

alter table payment_cards
    add column role text not null default 'primary' check (role in ('primary', 'backup')),
    drop constraint payment_cards_pkey,
    add constraint payment_cards_pkey primary key (company_id, role),
    -- One card, one role: a payment method is either the primary or the backup.
    add constraint payment_cards_one_role_per_method unique (company_id, payment_method_id);

alter table recharge_attempts
    add column card_role text not null default 'primary' check (card_role in ('primary', 'backup')),
    add column fallback_of uuid,
    add constraint recharge_attempts_fallback_of_fkey
        foreign key (company_id, fallback_of) references recharge_attempts (company_id, attempt_id),
    -- At most one fallback per primary attempt: the same recharge is tried once on the backup.
    add constraint recharge_attempts_one_fallback unique (company_id, fallback_of),
    add constraint recharge_attempts_fallback_is_backup check ((card_role = 'backup') = (fallback_of is not null));
