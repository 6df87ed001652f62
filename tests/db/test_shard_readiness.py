"""The schema and the queries are ready to be distributed by company_id (Citus; docs/scaling.md).

Citus cannot be installed here, so the step is checked statically, on a migrated database: the
catalog for keys and foreign keys, and each statement's generic plan (EXPLAIN) for its company filter.
"""

from __future__ import annotations

import re

import asyncpg

from tests.db import shard_rules
from tests.db.shard_rules import (
    REFERENCE_TABLES,
    Statement,
    foreign_key_violations,
    generic_plan,
    insert_without_company,
    key_violations,
    leaves_company_out,
    per_company_tables,
    service_modules,
    statements_of,
    unfiltered_function_statements,
    unrouted_scans,
)

# Statements that read across companies on purpose, and how each works on Citus (docs/scaling.md,
# "Global readers"). The test fails when one of them becomes routed (drop it here) or a new one appears.
GLOBAL_READERS = {
    # The all-companies event stream: a txid window over every company's events. On Citus it runs on
    # every shard (a multi-shard SELECT) and merges by event id; the window's xmin comes from each node.
    "service.app.events._BATCH_SQL": "all-companies event stream: one txid window, every shard",
    "service.app.events._HORIZON_SQL": "all-companies event stream: the lowest txid still open",
    "service.app.events._ORDER_BREAK_SQL": "all-companies event stream: ordering check inside a window",
    "service.app.events._BETWEEN_SQL": "all-companies event stream: whether a txid range holds events",
    # The recharge sweep and claim: which wallets need a recharge, which attempts are due. On Citus they
    # run per shard (run_command_on_shards, or one loop per worker node against its local shards), since
    # FOR UPDATE SKIP LOCKED is only allowed on a query routed to one shard.
    "service.recharge.planning._CANDIDATES_SQL": "recharge sweep: wallets below their minimum, every company",
    "service.recharge.attempts._CLAIM_SQL": "recharge claim: due attempts of every company",
    "service.recharge.attempts.next_due_in_s()": "recharge loop: when the next attempt of any company is due",
    # The metrics gauge of wallets below their minimum: a count over every company. On Citus a
    # multi-shard count (each shard counts, the coordinator adds), once per scrape.
    "service.metrics._count_wallets()": "metrics gauges: wallets below their minimum, and the like",
    # The attempt's own id comes back from Stripe (metadata) and from the loop; these add company_id
    # (it is on every Attempt) before the move to Citus, to be routed instead of multi-shard.
    "service.recharge.attempts.note_call()": "by attempt id: a call counted",
    "service.recharge.attempts.release_lease()": "by attempt id: a lease released",
    "service.recharge.outcomes.apply_outcome()": "by attempt id: an outcome recorded",
    "service.recharge.outcomes.apply_outcome()#2": "by attempt id: an outcome recorded",
    # Outbound webhooks. The claim is per endpoint across companies (FOR UPDATE SKIP LOCKED, so per
    # shard on Citus, like the recharge claim); the fan-out's safety net compares every company's
    # cursor with its newest event; an operator's look-ups go by delivery or endpoint id.
    "service.webhooks.fanout._BEHIND_SQL": "webhook fan-out safety net: companies past their cursor",
    "service.webhooks.store._CLAIM_SQL": "webhook claim: due deliveries of one endpoint, every company",
    "service.webhooks.store._NEXT_DUE_SQL": "webhook loop: when an endpoint's next attempt is due",
    "service.app.webhook_endpoints._DELIVERY_SQL": "by delivery id: an operator's redelivery",
    "service.app.webhook_endpoints._FAIL_PENDING_SQL": "by endpoint id: a disabled endpoint's deliveries",
    # An operator's commands (`stripe-reviews`): the held events of every company, and one by the Stripe
    # event id the operator has. On Citus a multi-shard read, run by hand and rarely.
    "service.recharge.webhook_reviews._LIST_OPEN_SQL": "operator: open held events, every company",
    "service.recharge.webhook_reviews._LIST_ALL_SQL": "operator: all held events, every company",
    "service.recharge.webhook_reviews._RESOLVE_SQL": "operator: a held event resolved by its event id",
    "service.recharge.webhook_reviews._READ_SQL": "operator: a held event read by its event id",
}
# Statements assembled at run time (f-strings), so not checked here; each says where its filter is.
RUNTIME_BUILT = {
    # API keys: a global table (shard_rules.GLOBAL_TABLES), a reference table on Citus; a key is looked
    # up by its hash before any company is known. Their column list is shared text.
    "service.app.api_keys.create_key()",
    "service.app.api_keys.find_key()",
    "service.app.api_keys.list_keys()",
    "service.app.api_keys.revoke_key()",
    # Its where-list starts with "company_id = $1" and only adds conditions to it.
    "service.app.reporting.usage_records.list_usage_records()",
    # The webhook's look-up of the attempt an event names, by attempt id (metadata) or PaymentIntent
    # id: not per company (the event names no company we trust yet); on Citus a multi-shard read by
    # an indexed id, or by company once the PaymentIntent's metadata carries it (docs/scaling.md).
    "service.recharge.webhook_events._ATTEMPT_SQL",
}
CHECKED_PACKAGES = ("service.app", "service.api", "service.recharge", "service.webhooks")


def all_statements() -> list[Statement]:
    found: list[Statement] = []
    for package in CHECKED_PACKAGES:
        for module in service_modules(package):
            found += statements_of(module)
    return found + statements_of("service.metrics")


async def test_every_per_company_table_keys_on_company_id(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        tables = await per_company_tables(conn)
        assert {"wallets", "ledger_entries", "usage_records", "recharge_attempts"} <= tables
        assert await key_violations(conn) == []
    finally:
        await conn.close()


async def test_foreign_keys_between_per_company_tables_include_company_id(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        assert await foreign_key_violations(conn) == []
    finally:
        await conn.close()


async def test_rate_card_defaults_are_reference_tables(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        defaults = await conn.fetchval("select count(*) from rate_cards where company_id is null")
        assert defaults >= 1
        assert {"rate_cards", "rate_card_rates"} <= REFERENCE_TABLES
        # A reference table is copied whole to every node: nothing in it may need a shard to check it.
        assert not [v for v in await foreign_key_violations(conn) if "rate_card" in v]
    finally:
        await conn.close()


async def test_the_catalog_checks_catch_a_table_that_breaks_the_rules(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """
            create table bad_notes (note_id bigint primary key, ref text unique,
                                    company_id text not null references companies);
            create table bad_children (company_id text not null, primary key (company_id, note_id),
                                       note_id bigint references bad_notes (note_id));
            create table bad_globals (id int primary key, owner text references companies (company_id));
            """
        )
        keys = await key_violations(conn)
        assert "bad_notes: primary key bad_notes_pkey (note_id)" in keys
        assert "bad_notes: unique index bad_notes_ref_key (ref)" in keys
        fks = await foreign_key_violations(conn)
        assert any("bad_children -> bad_notes" in v and "leaves company_id out" in v for v in fks), fks
        assert any("bad_globals (not per company) -> per-company companies" in v for v in fks), fks
    finally:
        await conn.execute("drop table if exists bad_children, bad_notes, bad_globals")
        await conn.close()


async def test_hot_path_and_report_statements_filter_on_one_company(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        tables = await per_company_tables(conn)
        statements = all_statements()
        assert len(statements) > 40  # the collection found the service's SQL
        unrouted: dict[str, str] = {}
        runtime_built: set[str] = set()
        for statement in statements:
            if statement.sql is None:
                runtime_built.add(statement.where)
                continue
            plan = await generic_plan(conn, statement.sql)
            bad = unrouted_scans(plan, tables)
            table = insert_without_company(statement.sql, tables)
            if table is not None:
                bad.append(f"insert into {table} without company_id")
            if bad:
                unrouted[statement.where] = ", ".join(bad)
    finally:
        await conn.close()
    assert runtime_built == RUNTIME_BUILT
    assert {w: unrouted[w] for w in sorted(set(unrouted) - set(GLOBAL_READERS))} == {}
    assert sorted(set(GLOBAL_READERS) - set(unrouted)) == []


async def test_the_plan_check_tells_a_routed_statement_from_an_unrouted_one(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        tables = await per_company_tables(conn)

        async def bad(sql: str) -> list[str]:
            return unrouted_scans(await generic_plan(conn, sql), tables)

        assert await bad("select * from usage_records where usage_record_id = $1") != []
        assert await bad("select * from wallets where company_id = any($1::text[])") != []
        assert await bad("select count(*) from wallets") != []
        assert await bad("select * from usage_records where company_id = $1 and usage_record_id = $2") == []
        assert (
            await bad(
                "select * from ledger_entries e join usage_records r"
                " on r.company_id = e.company_id and r.usage_record_id = e.usage_record_id"
                " where e.company_id = $1"
            )
            == []
        )
        assert (
            await bad(
                "select * from ledger_entries e join usage_records r on r.usage_record_id = e.usage_record_id"
                " where e.company_id = $1"
            )
            != []
        )
    finally:
        await conn.close()


async def test_sql_functions_filter_on_company(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        tables = await per_company_tables(conn)
    finally:
        await conn.close()
    statements = [
        s for path in shard_rules.sql_function_files() for s in shard_rules.function_statements(path)
    ]
    assert len(statements) > 30  # the bodies were found
    assert unfiltered_function_statements(tables) == []
    # The text check sees a statement that leaves company_id out, and one that does not.
    assert leaves_company_out("update holds set state = 'captured' where hold_id = p_hold_id", tables)
    assert not leaves_company_out(
        "update holds set state = 'captured' where company_id = p_company_id and hold_id = p_hold_id", tables
    )


async def test_the_citus_plan_in_docs_distributes_exactly_the_per_company_tables_parents_first(
    db_url: str,
) -> None:
    text = (shard_rules.ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    distributed = re.findall(r"create_distributed_table\('(\w+)'", text)
    referenced = set(re.findall(r"create_reference_table\('(\w+)'\)", text))
    conn = await asyncpg.connect(db_url)
    try:
        tables = await per_company_tables(conn)
        parents = await conn.fetch(
            """
            select src.relname as child, dst.relname as parent
              from pg_constraint k
              join pg_class src on src.oid = k.conrelid
              join pg_class dst on dst.oid = k.confrelid
             where k.contype = 'f' and src.relname <> dst.relname
            """
        )
    finally:
        await conn.close()
    assert sorted(distributed) == sorted(tables)
    assert REFERENCE_TABLES <= referenced <= REFERENCE_TABLES | shard_rules.GLOBAL_TABLES
    order = {table: i for i, table in enumerate(distributed)}
    for row in parents:
        if row["child"] in order and row["parent"] in order:
            assert order[row["parent"]] < order[row["child"]], (
                f"{row['parent']} must come before {row['child']}"
            )
