-- Keeps wallets.has_card (an input of the suspension rule) in step with the primary card on file: the
-- backup alone is never charged (it only carries on a recharge the primary declined).
create or replace function note_card_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        if new.role = 'primary' then
            update wallets set has_card = true where company_id = new.company_id and not has_card;
        end if;
    else
        update wallets
           set has_card = exists (select 1 from payment_cards where company_id = old.company_id and role = 'primary')
         where company_id = old.company_id;
    end if;
    return null;
end
$$;

create or replace trigger payment_cards_note_change after insert or delete on payment_cards
    for each row execute function note_card_change();
