-- A void records the authenticated principal beside the self-described actor, as credits and debits do
-- (0005). Voids written before this migration have no principal.
alter table usage_voids add column principal_id text;
-- void_usage_record() takes the principal: a new signature, so the old one goes.
drop function if exists void_usage_record(text, text, bytea, uuid, bigint, text, text);
