-- 0008 and 0009 added unique indexes on holds (company_id, hold_id) and usage_records (company_id,
-- usage_record_id) for foreign keys to refer to. Since 0012 the primary keys are those same columns, so
-- every debit kept two identical indexes up to date. The foreign keys that rest on the copies move to the
-- primary keys, and the copies go.
alter table hold_extensions drop constraint hold_extensions_company_id_hold_id_fkey;
alter table holds drop constraint holds_usage_record_id_fkey;
alter table usage_voids drop constraint usage_voids_company_id_usage_record_id_fkey;

drop index holds_company_hold;
drop index usage_records_company_record;

alter table hold_extensions add constraint hold_extensions_company_id_hold_id_fkey
    foreign key (company_id, hold_id) references holds (company_id, hold_id);
alter table holds add constraint holds_usage_record_id_fkey
    foreign key (company_id, usage_record_id) references usage_records (company_id, usage_record_id);
alter table usage_voids add constraint usage_voids_company_id_usage_record_id_fkey
    foreign key (company_id, usage_record_id) references usage_records (company_id, usage_record_id);
