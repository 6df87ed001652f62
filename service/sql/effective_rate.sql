-- The unit price for one rate key at one moment: the company's newest card version in effect at p_at
-- if it lists the key, else the default card's newest version in effect then.
create or replace function effective_rate(p_company_id text, p_rate_key text, p_at timestamptz,
                               out unit_price_nanos bigint, out rate_card text, out rate_card_version integer)
language sql stable as $$
    select r.unit_price_nanos, coalesce(c.company_id, 'default'), c.version
    from rate_cards c
    join rate_card_rates r on r.rate_card_id = c.rate_card_id and r.rate_key = p_rate_key
    where c.rate_card_id in (
        (select rate_card_id from rate_cards
          where company_id = p_company_id and effective_from <= p_at
          order by effective_from desc limit 1),
        (select rate_card_id from rate_cards
          where company_id is null and effective_from <= p_at
          order by effective_from desc limit 1))
    order by c.company_id nulls last
    limit 1
$$;
