-- The 15-minute UTC bucket of usage_rollups that an instant falls in.
create or replace function usage_rollup_bucket(p_at timestamptz) returns timestamptz
language sql immutable parallel safe as $$
    select date_bin('15 minutes', p_at, timestamptz '2000-01-01 00:00:00+00')
$$;
