-- Audit trails record the authenticated principal (`key:<id>`, `mtls:<identity>`, or `anonymous` while
-- authentication is off). `actor` keeps the "on behalf of" label a caller may add (x-on-behalf-of or
-- x-actor metadata, CreditWallet.actor); rows written before this migration have no principal.
alter table settings_changes add column principal_id text;
alter table wallet_credits add column principal_id text;
-- credit_wallet() takes the principal: a new signature, so the old one goes.
drop function if exists credit_wallet(text, text, bytea, text, bigint, text, text);
