"""The `consofta-billing` command as an operator runs it: real subprocesses against a real database."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from service.app.record_usage import RecordUsageCommand, record_usage
from service.db.embedded import running_url
from service.db.migrate import available_migrations
from service.domain.usage_kinds import EmailUsage
from tests.support.cli import run

LATEST = available_migrations()[-1].version


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"BILLING_GRPC_PORT": "99999"},
            "configuration error: BILLING_GRPC_PORT=99999 is out of range (0-65535; 0 picks a free port)",
        ),
        (
            {"BILLING_STRIPE_SECRET_KEY": "sk_test_" + "abc123"},
            "configuration error: BILLING_STRIPE_WEBHOOK_SECRET is missing while "
            "BILLING_STRIPE_SECRET_KEY is set",
        ),
        ({"DATABASE_URL": "mysql://db/x"}, "configuration error: DATABASE_URL must start with postgresql://"),
        (
            {"DATABASE_URL": "postgresql://127.0.0.1:1/x"},
            "configuration error: BILLING_PAYMENT_PROVIDER is not set: choose stripe or sandbox",
        ),
        (
            {"DATABASE_URL": "postgresql://127.0.0.1:1/x", "BILLING_PAYMENT_PROVIDER": "sandbox"},
            "configuration error: BILLING_PAYMENT_PROVIDER=sandbox with DATABASE_URL",
        ),
    ],
)
async def test_bad_configuration_stops_with_exit_2_and_one_line(env: dict[str, str], line: str) -> None:
    result = await run("serve", **env)
    assert result.code == 2
    assert result.err.count("\n") == 1 and line in result.err
    assert "abc123" not in result.err


async def test_migrate_and_schema_version(db_url: str) -> None:
    migrated = await run("migrate", database_url=db_url)
    assert (migrated.code, migrated.out) == (0, f"{LATEST}\n")
    shown = await run("schema-version", database_url=db_url)
    assert (shown.code, shown.out) == (0, f"{LATEST}\n")
    as_json = await run("schema-version", "--json", database_url=db_url)
    assert json.loads(as_json.out) == {"schema_version": LATEST, "code_schema_version": LATEST}


async def test_commands_log_only_warnings_unless_verbose(db_url: str) -> None:
    quiet = await run("migrate", database_url=db_url)
    assert (quiet.code, quiet.err) == (0, "")
    verbose = await run("migrate", "-v", database_url=db_url)
    assert verbose.code == 0
    assert [json.loads(line)["event"] for line in verbose.err.splitlines()] == ["schema version"]


async def test_company_create_then_wallet_show_with_its_last_entries(db_url: str) -> None:
    created = await run("company", "create", "acme", "--name", "Acme Inc", database_url=db_url)
    assert created.code == 0, created.err
    assert created.out == "company acme (Acme Inc) created; balance 0.000000000 USD\n"
    again = await run("company", "create", "acme", "--name", "Acme Inc", database_url=db_url)
    assert (again.code, again.out) == (
        0,
        "company acme (Acme Inc) already existed (same request id); balance 0.000000000 USD\n",
    )
    other = await run("company", "create", "acme", "--request-id", "another", database_url=db_url)
    assert (other.code, other.err) == (1, "consofta-billing: company 'acme' already has a wallet\n")

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        now = datetime.now(UTC)
        for n, count in enumerate((1000, 10, 1)):
            await record_usage(pool, RecordUsageCommand("acme", f"k{n}", EmailUsage(count), None, now))
    finally:
        await pool.close()

    shown = await run("wallet", "show", "acme", "--last", "2", database_url=db_url)
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0] == "company   acme (Acme Inc)"
    assert lines[1] == "balance   -0.682425000 USD"  # 1011 emails at $0.000675
    assert lines[2] == "minimum   0.000000000 USD (below minimum)"
    assert lines[3] == "entries   3 in all; the last 2, newest first:"
    assert len(lines) == 7
    assert [line.split()[0] for line in lines[5:]] == ["3", "2"]  # sequence numbers, newest first
    assert [line.split()[3] for line in lines[5:]] == ["usage_debit", "usage_debit"]
    assert lines[5].split()[4:6] == ["-0.000675000", "-0.682425000"]
    assert lines[6].split()[4:6] == ["-0.006750000", "-0.681750000"]


async def test_wallet_credit_adds_a_manual_credit_once_per_request_id(db_url: str) -> None:
    assert (await run("company", "create", "acme", database_url=db_url)).code == 0
    args = ("wallet", "credit", "acme", "12.50", "--reason", "goodwill, ticket 481", "--request-id", "t-481")
    first = await run(*args, database_url=db_url)
    assert first.code == 0, first.err
    assert first.out == (
        "credit of 12.500000000 USD to acme applied: ledger entry 1, balance 12.500000000 USD, "
        "request id t-481\n"
    )
    again = await run(*args, database_url=db_url)
    assert again.code == 0
    assert "was already applied (same request id)" in again.out
    other = await run("wallet", "credit", "acme", "0.000000001", "--reason", "rounding", database_url=db_url)
    assert other.code == 0 and "balance 12.500000001 USD" in other.out
    shown = await run("wallet", "show", "acme", database_url=db_url)
    assert "balance   12.500000001 USD" in shown.out
    assert "manual_credit" in shown.out and "goodwill, ticket 481" in shown.out
    as_json = await run("wallet", "show", "acme", "--last", "1", "--json", database_url=db_url)
    assert as_json.code == 0 and as_json.err == ""
    wallet = json.loads(as_json.out)
    assert (wallet["balance_nanos"], wallet["balance_usd"]) == (12_500_000_001, "12.500000001")
    assert wallet["ledger_entries"] == 2
    assert [(e["sequence"], e["entry_type"], e["amount_nanos"]) for e in wallet["entries"]] == [
        (2, "manual_credit", 1)
    ]


async def test_wallet_debit_and_usage_void_correct_once_per_request_id(db_url: str) -> None:
    assert (await run("company", "create", "acme", database_url=db_url)).code == 0
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        now = datetime.now(UTC)
        recorded = await record_usage(pool, RecordUsageCommand("acme", "k1", EmailUsage(1000), None, now))
    finally:
        await pool.close()
    record_id = str(recorded.record.usage_record_id)

    debit = ("wallet", "debit", "acme", "2.25", "--reason", "missed usage", "--request-id", "d-1")
    first = await run(*debit, database_url=db_url)
    assert first.code == 0, first.err
    assert first.out == (
        "debit of 2.250000000 USD from acme applied: ledger entry 2, balance -2.925000000 USD, "
        "request id d-1\n"
    )
    again = await run(*debit, database_url=db_url)
    assert again.code == 0 and "was already applied (same request id)" in again.out

    void = (
        "usage",
        "void",
        "acme",
        record_id,
        "--amount",
        "0.5",
        "--reason",
        "bounced",
        "--request-id",
        "v-1",
    )
    part = await run(*void, "--json", database_url=db_url)
    assert part.code == 0, part.err
    assert {k: v for k, v in json.loads(part.out).items() if k.endswith("_nanos")} == {
        "amount_nanos": 500_000_000,
        "record_amount_nanos": 675_000_000,
        "voided_nanos": 500_000_000,
        "balance_after_nanos": -2_425_000_000,
    }
    rest = await run("usage", "void", "acme", record_id, "--reason", "bounced", database_url=db_url)
    assert rest.code == 0, rest.err
    assert "0.675000000 of 0.675000000 USD voided" in rest.out
    past = await run("usage", "void", "acme", record_id, "--reason", "again", database_url=db_url)
    assert past.code == 1 and "cannot be voided" in past.err, past.err
    replay = await run(*void, database_url=db_url)
    assert replay.code == 0 and "was already applied (same request id)" in replay.out

    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "select amount_nanos, principal_id from usage_voids where company_id = 'acme' "
            "order by ledger_sequence"
        )
        debits = await conn.fetch("select principal_id from wallet_credits where company_id = 'acme'")
    finally:
        await conn.close()
    assert [(r["amount_nanos"], r["principal_id"].startswith("cli:")) for r in rows] == [
        (500_000_000, True),
        (175_000_000, True),
    ]
    assert [r["principal_id"].startswith("cli:") for r in debits] == [True]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("usage", "void", "acme", "not-a-uuid", "--reason", "x"),
            "argument RECORD: 'not-a-uuid' is not a usage",
        ),
        (("usage", "void", "acme", "00000000-0000-0000-0000-000000000001"), "required: --reason"),
        (("wallet", "debit", "acme", "-1", "--reason", "x"), "argument AMOUNT_USD: '-1' must be a positive"),
        (("wallet", "debit", "acme", "5", "--reason", " "), "reason: is required"),
    ],
)
async def test_correction_errors_name_the_argument(args: tuple[str, ...], says: str) -> None:
    result = await run(*args)
    assert result.code == 2
    assert says in result.err


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("12.5", "--reason", "x"), 1, "company 'nobody' has no wallet"),
        (("ten", "--reason", "x"), 2, "argument AMOUNT_USD: 'ten' is not an amount in USD"),
        (("-5", "--reason", "x"), 2, "argument AMOUNT_USD: '-5' must be a positive amount in USD"),
        (("0.0000000001", "--reason", "x"), 2, "argument AMOUNT_USD: '0.0000000001' has more than 9 decimal"),
        (("5",), 2, "the following arguments are required: --reason"),
        # Refused by the use case's own checks, not by the parser: still a bad argument, still exit 2.
        (("100001", "--reason", "x"), 2, "amount: must be at most 100,000 USD in one credit"),
        (("5", "--reason", ""), 2, "reason: is required"),
        (("5", "--reason", "  "), 2, "reason: is required"),
    ],
)
async def test_wallet_credit_errors_name_the_argument(
    db_url: str, args: tuple[str, ...], code: int, says: str
) -> None:
    result = await run("wallet", "credit", "nobody", *args, database_url=db_url)
    assert result.code == code
    assert says in result.err


async def test_unknown_company_is_a_clear_error_with_exit_1(db_url: str) -> None:
    result = await run("wallet", "show", "nobody", database_url=db_url)
    assert (result.code, result.out) == (1, "")
    assert result.err == "consofta-billing: company 'nobody' has no wallet\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("wallet", "show", "acme", "--last", "0"), "argument --last: 0 is out of range (1-10000)"),
        (("wallet", "show", "acme", "--last", "ten"), "argument --last: 'ten' is not a whole number"),
        (("company", "create", "not ok!"), "argument COMPANY: 'not ok!' is not a company id"),
        (("wallet", "show"), "the following arguments are required: COMPANY"),
    ],
)
async def test_bad_arguments_name_the_argument(args: tuple[str, ...], says: str) -> None:
    result = await run(*args)
    assert result.code == 2
    assert says in result.err


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("serve",),
        ("migrate",),
        ("health",),
        ("company", "create"),
        ("wallet", "show"),
        ("wallet", "credit"),
        ("wallet", "debit"),
        ("usage", "void"),
        ("recharges", "list"),
        ("stripe-reviews", "list"),
        ("stripe-reviews", "resolve"),
        ("worker",),
    ],
)
async def test_every_command_has_help(args: tuple[str, ...]) -> None:
    result = await run(*args, "--help")
    assert result.code == 0
    assert result.out.startswith("usage: consofta-billing")


async def test_health_of_a_server_that_is_not_there_is_exit_1() -> None:
    result = await run("health", "--target", "127.0.0.1:1", "--timeout-s", "1")
    assert result.code == 1
    assert "UNAVAILABLE" in result.out


def test_a_running_embedded_postgres_is_found_from_its_postmaster_pid(tmp_path: Path) -> None:
    # The attach path of every support command: the URL comes from postmaster.pid, or None when the
    # postmaster is gone or not ready yet (then the command starts the embedded Postgres itself).
    def write(pid: int, status: str) -> None:
        fields = [str(pid), str(tmp_path), "1796198034", "5433", str(tmp_path), "", "  5677344   34", status]
        (tmp_path / "postmaster.pid").write_text("\n".join(fields) + "\n")

    assert running_url(tmp_path) is None
    write(os.getpid(), "ready   ")
    assert (
        running_url(tmp_path)
        == f"postgresql://postgres@/billing?host={quote(str(tmp_path), safe='')}&port=5433"
    )
    write(os.getpid(), "starting")
    assert running_url(tmp_path) is None
    dead = subprocess.Popen(["true"])
    dead.wait()
    write(dead.pid, "ready")
    assert running_url(tmp_path) is None
