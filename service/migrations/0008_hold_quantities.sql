-- Holds know how much usage they cover, so AuthorizeUsage can hold the affordable part of a usage and
-- ExtendHold can grow a hold while a call goes on.
alter table holds add column authorized_quantity bigint check (authorized_quantity >= 0);
alter table holds add column quantity_per_unit integer not null default 1 check (quantity_per_unit > 0);
-- Holds made before: a call's hold covered its started minutes, 60 seconds each.
update holds set quantity_per_unit = 60 where usage_type = 'call';
update holds set authorized_quantity = billable_units * quantity_per_unit;
alter table holds alter column authorized_quantity set not null;

-- A per-company key for the holds, so that per-company tables can refer to a hold with company_id.
create unique index holds_company_hold on holds (company_id, hold_id);

-- ExtendHold's extensions, idempotent under (company_id, request_id); the hold row carries the total.
create table hold_extensions (
    company_id          text not null,
    request_id          text not null check (length(request_id) between 1 and 255),
    hold_id             uuid not null,
    requested_quantity  bigint not null check (requested_quantity > 0),
    added_quantity      bigint not null check (added_quantity > 0),
    added_units         bigint not null check (added_units >= 0),
    added_amount_nanos  bigint not null check (added_amount_nanos >= 0),
    affordable_quantity bigint not null check (affordable_quantity >= 0),
    expires_at          timestamptz not null,
    created_at          timestamptz not null default now(),
    primary key (company_id, request_id),
    foreign key (company_id, hold_id) references holds (company_id, hold_id)
);

-- AuthorizeUsage takes the usage's quantity and answers what is affordable: a new signature.
drop function if exists authorize_usage(uuid, text, text, bytea, text, text, bigint, interval);
