-- The unit price for one rate key at one moment: the company's newest card version in effect at p_at
-- if it lists the key, else the default card's newest version in effect then.
--
-- PL/pgSQL rather than SQL so that its query is planned once per session: a SQL function that is not
-- inlined is planned again on every call, which was most of its cost on the RecordUsage path.
create or replace function effective_rate(p_company_id text, p_rate_key text, p_at timestamptz,
                               out unit_price_nanos bigint, out rate_card text, out rate_card_version integer)
language plpgsql stable as $$
begin
    select r.unit_price_nanos, coalesce(c.company_id, 'default'), c.version
      into unit_price_nanos, rate_card, rate_card_version
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
    limit 1;
end
$$;
