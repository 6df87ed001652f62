"""What "ready to be distributed by company_id" means, checked on a live database (docs/scaling.md).

A per-company table is one with a `company_id` column, unless it is listed below as a reference or a
global table. On Citus every per-company table is distributed by company_id and co-located with
`companies`, so:
* its primary key, unique constraints and unique indexes include company_id (a shard can only enforce
  uniqueness inside itself);
* a foreign key between two per-company tables includes company_id on both sides (co-located rows);
* no reference or global table holds a foreign key onto a per-company table (Citus cannot check it);
* a statement on per-company tables filters each of them on one company_id, `company_id = $n`, or joins
  it on company_id to a table that is (so Citus routes it to one shard).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[2]

# Reference tables: copied to every node by create_reference_table(). Small, rarely written, and read by
# every debit, so each shard joins them locally.
REFERENCE_TABLES = {
    # The default rate card and the few companies' own cards, with their versions: a few rows per card,
    # written by operators; effective_rate() reads them inside every record_usage().
    "rate_cards",
    "rate_card_rates",
    # Keyed by Stripe's event id; the company is only known after the event is read. Written once per
    # webhook, read by its id: copied everywhere, it lets a company's review row point at it.
    "stripe_webhook_events",
    # Outbound webhook endpoints: a few rows per deployment, written by operators, referenced by every
    # company's delivery rows.
    "webhook_endpoints",
}
# Global tables: not per company, kept on the coordinator (or distributed by their own key).
GLOBAL_TABLES = {
    "schema_migrations",  # the migrator's bookkeeping, applied on the coordinator
    "schema_repeatables",
    # A key is looked up by its hash before any company is known (authentication).
    "api_keys",
}
NOT_PER_COMPANY = REFERENCE_TABLES | GLOBAL_TABLES


async def per_company_tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        """
        select c.relname from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
          join pg_attribute a on a.attrelid = c.oid and a.attname = 'company_id' and not a.attisdropped
         where n.nspname = 'public' and c.relkind in ('r', 'p')
        """
    )
    return {r["relname"] for r in rows} - NOT_PER_COMPANY


async def key_violations(conn: asyncpg.Connection) -> list[str]:
    """Per-company tables whose primary key or a unique constraint or index leaves company_id out."""
    tables = await per_company_tables(conn)
    found: list[str] = []
    has_pk = {
        r["relname"]
        for r in await conn.fetch(
            "select c.relname from pg_constraint k join pg_class c on c.oid = k.conrelid"
            " where k.contype = 'p'"
        )
    }
    found += [f"{table}: no primary key" for table in sorted(tables - has_pk)]
    rows = await conn.fetch(
        """
        select t.relname as table_name, i.relname as index_name, x.indisprimary as is_primary,
               array(select a.attname from unnest(x.indkey[0:x.indnkeyatts - 1]) k(attnum)
                       join pg_attribute a on a.attrelid = t.oid and a.attnum = k.attnum)::text[] as columns
          from pg_index x
          join pg_class t on t.oid = x.indrelid
          join pg_class i on i.oid = x.indexrelid
          join pg_namespace n on n.oid = t.relnamespace
         where n.nspname = 'public' and x.indisunique
        """
    )
    for row in rows:
        if row["table_name"] in tables and "company_id" not in row["columns"]:
            kind = "primary key" if row["is_primary"] else "unique index"
            found.append(f"{row['table_name']}: {kind} {row['index_name']} ({', '.join(row['columns'])})")
    return sorted(found)


async def foreign_key_violations(conn: asyncpg.Connection) -> list[str]:
    tables = await per_company_tables(conn)
    rows = await conn.fetch(
        """
        select k.conname, src.relname as source, dst.relname as target,
               array(select a.attname from unnest(k.conkey) with ordinality u(attnum, i)
                       join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.attnum
                      order by u.i)::text[] as source_columns,
               array(select a.attname from unnest(k.confkey) with ordinality u(attnum, i)
                       join pg_attribute a on a.attrelid = k.confrelid and a.attnum = u.attnum
                      order by u.i)::text[] as target_columns
          from pg_constraint k
          join pg_class src on src.oid = k.conrelid
          join pg_class dst on dst.oid = k.confrelid
          join pg_namespace n on n.oid = src.relnamespace
         where n.nspname = 'public' and k.contype = 'f'
        """
    )
    found: list[str] = []
    for row in rows:
        source, target = row["source"], row["target"]
        pairs = list(zip(row["source_columns"], row["target_columns"], strict=True))
        if source in tables and target in tables:
            if ("company_id", "company_id") not in pairs:
                found.append(f"{row['conname']}: {source} -> {target} on {pairs} leaves company_id out")
        elif target in tables:
            found.append(f"{row['conname']}: {source} (not per company) -> per-company {target}")
        elif source in tables and target not in REFERENCE_TABLES:
            found.append(f"{row['conname']}: per-company {source} -> global {target}")
    return sorted(found)


# -- statements ---------------------------------------------------------------------------------------------

SQL_START = re.compile(r"\s*(select|insert|update|delete|with)\b", re.IGNORECASE)
CALLS = {"fetch", "fetchrow", "fetchval", "execute", "executemany", "prepare", "cursor"}


@dataclass(frozen=True)
class Statement:
    where: str  # module.NAME or module:line
    sql: str | None  # None: built at run time (an f-string), not checkable statically


def statements_of(module_name: str) -> list[Statement]:
    """The SQL a module runs: its module-level *_SQL strings, and string literals passed to the pool."""
    module = importlib.import_module(module_name)
    found: list[Statement] = []
    for name, value in vars(module).items():
        if name.endswith("_SQL") and isinstance(value, str) and SQL_START.match(value):
            # A template completed with str.format() at run time is not checkable as it stands.
            template = re.search(r"\{\w+\}", value) is not None
            found.append(Statement(f"{module_name}.{name}", None if template else value))
    path = Path(module.__file__ or "")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        # Named by the function that runs it (numbered from the second on), not by line: stable under edits.
        seen = 0
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                continue
            if node.func.attr not in CALLS:
                continue
            first = node.args[0]
            sql: str | None
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and SQL_START.match(first.value)
            ):
                sql = first.value
            elif isinstance(first, ast.JoinedStr):
                sql = None
            else:
                continue
            seen += 1
            where = f"{module_name}.{function.name}()" + (f"#{seen}" if seen > 1 else "")
            found.append(Statement(where, sql))
    return found


def service_modules(package: str) -> list[str]:
    base = ROOT / package.replace(".", "/")
    names = []
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


_PARAM_FILTER = re.compile(r"\bcompany_id\s*=\s*\$\d+|\$\d+\s*=\s*(\w+\.)?company_id\b")
_COMPANY_JOIN = re.compile(r"\b(\w+)\.company_id\s*=\s*(\w+)\.company_id\b")
_CONDITIONS = ("Index Cond", "Filter", "Recheck Cond", "Join Filter", "Hash Cond", "Merge Cond", "TID Cond")


def _walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _walk(child)
    return nodes


def _scan_filtered(node: dict[str, Any]) -> bool:
    texts = [str(node.get(key, "")) for key in _CONDITIONS]
    texts += [str(c.get(key, "")) for c in node.get("Plans", []) for key in _CONDITIONS]  # bitmap index scans
    return any(_PARAM_FILTER.search(text) for text in texts)


def unrouted_scans(plan: dict[str, Any], tables: set[str]) -> list[str]:
    """The per-company relations a plan reads without one company_id (or a join on company_id)."""
    nodes = _walk(plan)
    joined: set[str] = set()
    for node in nodes:
        for key in _CONDITIONS:
            for left, right in _COMPANY_JOIN.findall(str(node.get(key, ""))):
                joined |= {left, right}
    filtered_aliases = {
        node.get("Alias", node.get("Relation Name"))
        for node in nodes
        if node.get("Relation Name") in tables and _scan_filtered(node)
    }
    bad: list[str] = []
    for node in nodes:
        relation = node.get("Relation Name")
        if relation not in tables:
            continue
        alias = node.get("Alias", relation)
        if node.get("Node Type") == "ModifyTable" or _scan_filtered(node):
            continue
        if alias in joined and joined & filtered_aliases:
            continue
        bad.append(f"{relation} ({node.get('Node Type')})")
    return bad


async def generic_plan(conn: asyncpg.Connection, sql: str) -> dict[str, Any]:
    """The statement's plan for any parameter values (a generic plan shows `$1` where a value goes)."""
    parameters = len((await conn.prepare(sql)).get_parameters())
    async with conn.transaction():
        await conn.execute("set local plan_cache_mode = force_generic_plan")
        await conn.execute(f"prepare shard_check as {sql}")
        try:
            nulls = ", ".join(["null"] * parameters)
            explained = await conn.fetchval(
                f"explain (format json, verbose) execute shard_check{f'({nulls})' if parameters else ''}"
            )
        finally:
            await conn.execute("deallocate shard_check")
    return dict(json.loads(explained)[0]["Plan"])


def insert_without_company(sql: str, tables: set[str]) -> str | None:
    match = re.search(r"\binsert\s+into\s+(\w+)\s*\(([^)]*)\)", sql, re.IGNORECASE)
    if match and match.group(1) in tables and "company_id" not in match.group(2):
        return match.group(1)
    return None


# -- SQL function bodies (service/sql/): the same rule, on the text of each statement -----------------------

_TABLE_USE = re.compile(r"\b(?:from|join|update|into)\s+(\w+)", re.IGNORECASE)


def function_statements(path: Path) -> list[str]:
    """The statements inside the function bodies ($$ ... $$) of one service/sql file."""
    text = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
    statements: list[str] = []
    for body in re.findall(r"\$\$(.*?)\$\$", text, re.DOTALL):
        statements += [s.strip() for s in body.split(";") if s.strip()]
    return statements


# Whole rows of the table's own type, built in the function (record_usages' planned records): each row
# carries its company_id, and Citus routes an insert row by row, so it names no column.
_INSERT_OWN_ROWS = re.compile(r"insert into (\w+) select \* from unnest\(\w+\)", re.IGNORECASE)


def leaves_company_out(statement: str, tables: set[str]) -> bool:
    """A statement that reads or writes a per-company table and never names company_id."""
    if _INSERT_OWN_ROWS.fullmatch(" ".join(statement.split())):
        return False
    return bool({t for t in _TABLE_USE.findall(statement) if t in tables}) and "company_id" not in statement


def sql_function_files() -> list[Path]:
    return [p for p in sorted((ROOT / "service" / "sql").glob("*.sql")) if p.name != "schema.sql"]


def unfiltered_function_statements(tables: set[str]) -> list[str]:
    return [
        f"{path.name}: {' '.join(statement.split())[:120]}"
        for path in sql_function_files()
        for statement in function_statements(path)
        if leaves_company_out(statement, tables)
    ]
