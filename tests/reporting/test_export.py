"""ExportWalletTransactions: CSV that parses back and sums to the balance movement, streamed in chunks."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from consofta.billing.v1 import reporting_pb2

from service.api.wire.timestamps import timestamp
from service.app.reporting.export import (
    HEADER,
    MAX_CHUNK_BYTES,
    PAGE_ROWS,
    csv_cell,
    export_ledger,
    safe_text,
)
from service.domain.money import NANOS_PER_USD, usd
from tests.conftest import Stubs
from tests.reporting import ledger_writer
from tests.reporting.test_statements_and_summaries import history


def nanos(decimal_usd: str) -> int:
    value = Decimal(decimal_usd) * NANOS_PER_USD
    assert value == value.to_integral_value(), decimal_usd
    return int(value)


async def export_text(stubs: Stubs, company: str, **bounds: datetime) -> str:
    request = reporting_pb2.ExportWalletTransactionsRequest(
        company_id=company, **{k: timestamp(v) for k, v in bounds.items()}
    )
    return b"".join(
        [chunk.csv_chunk async for chunk in stubs.wallet.ExportWalletTransactions(request)]
    ).decode()


async def test_csv_parses_back_and_sums_to_the_balance_movement(
    stubs: Stubs, conn: asyncpg.Connection
) -> None:
    company = await stubs.new_company()
    await history(conn, company)
    await ledger_writer.credit(
        conn,
        company,
        "manual_credit",
        usd(1),
        datetime(2025, 2, 27, tzinfo=UTC),
        description='=HYPERLINK("x"), "quoted"',
    )
    start, end = datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 2, 10, tzinfo=UTC)
    text = await export_text(stubs, company, start_time=start, end_time=end)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == HEADER
    body = [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]
    assert body, "the range holds entries"
    expected = await conn.fetch(
        "select * from ledger_entries where company_id = $1 and created_at >= $2 and created_at < $3"
        " order by sequence",
        company,
        start,
        end,
    )
    assert [int(r["ledger_sequence"]) for r in body] == [e["sequence"] for e in expected]
    for row, entry in zip(body, expected, strict=True):
        assert row["posted_at"] == entry["created_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert datetime.fromisoformat(row["posted_at"]) == entry["created_at"]
        assert nanos(row["amount_usd"]) == entry["amount_nanos"]
        assert nanos(row["balance_after_usd"]) == entry["balance_after_nanos"]
        assert row["entry_type"] == entry["entry_type"]
        assert row["reference"] == (entry["reference"] or "")
    opening = nanos(body[0]["balance_after_usd"]) - nanos(body[0]["amount_usd"])
    closing = nanos(body[-1]["balance_after_usd"])
    assert sum(nanos(r["amount_usd"]) for r in body) == closing - opening != 0
    # The same movement, computed by the ledger: the balances just before start and end.
    at = (
        "select coalesce((select balance_after_nanos from ledger_entries where company_id = $1"
        " and created_at < $2 order by sequence desc limit 1), 0)"
    )
    assert closing - opening == await conn.fetchval(at, company, end) - await conn.fetchval(
        at, company, start
    )

    whole = list(csv.DictReader(io.StringIO(await export_text(stubs, company), newline="")))
    balance = await conn.fetchval("select balance_nanos from wallets where company_id = $1", company)
    assert sum(nanos(r["amount_usd"]) for r in whole) == balance
    # A description a spreadsheet would run as a formula comes back as text.
    assert whole[-1]["description"] == "'" + '=HYPERLINK("x"), "quoted"'


async def bulk_history(conn: asyncpg.Connection, company: str, entries: int) -> int:
    """`entries` manual credits of 1..n nanos, written in one statement (no per-entry wallet events)."""
    start = datetime(2025, 5, 1, tzinfo=UTC)
    async with conn.transaction():
        await conn.execute("select 1 from wallets where company_id = $1 for update", company)
        await conn.execute(
            """
            insert into ledger_entries (company_id, sequence, entry_type, amount_nanos, balance_before_nanos,
                                        balance_after_nanos, reference, description, created_at)
            select $1, i, 'manual_credit', i, (i - 1) * i / 2, i * (i + 1) / 2, 'ref-' || i,
                   'bulk credit number ' || i, $3::timestamptz + i * interval '10 milliseconds'
              from generate_series(1::bigint, $2::bigint) as i
            """,
            company,
            entries,
            start,
        )
        total = entries * (entries + 1) // 2
        await conn.execute(
            "update wallets set balance_nanos = $2, last_sequence = $3 where company_id = $1",
            company,
            total,
            entries,
        )
    return total


class CountingPool:
    """The real pool, with a note of how many rows each fetch returned (a hand-written spy, not a mock)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.fetched_rows: list[int] = []

    def acquire(self) -> Any:
        return self._pool.acquire()

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        rows = await self._pool.fetch(query, *args)
        self.fetched_rows.append(len(rows))
        return rows


ROWS = 200_000


async def test_a_200k_row_export_streams_in_bounded_chunks_and_pages(
    stubs: Stubs, conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    company = await stubs.new_company()
    total = await bulk_history(conn, company, ROWS)

    # Through the RPC: many chunks of whole rows, none large, that sum to the movement.
    chunks = rows = amount = size = 0
    biggest = 0
    stream = stubs.wallet.ExportWalletTransactions(
        reporting_pb2.ExportWalletTransactionsRequest(company_id=company)
    )
    async for chunk in stream:
        text = chunk.csv_chunk.decode()
        lines = list(csv.reader(io.StringIO(text, newline="")))
        if chunks == 0:
            assert tuple(lines.pop(0)) == HEADER
        assert len(lines) == chunk.row_count <= PAGE_ROWS
        amount += sum(nanos(line[4]) for line in lines)
        rows += len(lines)
        chunks += 1
        size += len(chunk.csv_chunk)
        biggest = max(biggest, len(chunk.csv_chunk))
    assert rows == ROWS and amount == total
    assert chunks >= ROWS // PAGE_ROWS and biggest <= MAX_CHUNK_BYTES + 1024
    assert size > 15_000_000

    # The query pattern: keyset pages of at most PAGE_ROWS, never one fetch of everything, and each page
    # is handed on before the next is read: at most one page of rows is ever held.
    spy = CountingPool(pool)
    streamed = 0
    async for chunk in export_ledger(spy, company, None, None):  # type: ignore[arg-type,assignment]
        streamed += chunk.row_count
        assert sum(spy.fetched_rows) == streamed, "a page was read before the previous one was sent"
    assert streamed == ROWS
    assert max(spy.fetched_rows) == PAGE_ROWS and len(spy.fetched_rows) == -(-ROWS // PAGE_ROWS)


@pytest.mark.parametrize("page_rows", [1, 7])
async def test_small_pages_give_the_same_file(
    stubs: Stubs, conn: asyncpg.Connection, pool: asyncpg.Pool, page_rows: int
) -> None:
    company = await stubs.new_company()
    await history(conn, company)
    whole = b"".join([c.data async for c in export_ledger(pool, company, None, None)])
    paged = b"".join([c.data async for c in export_ledger(pool, company, None, None, page_rows=page_rows)])
    assert paged == whole and whole.count(b"\r\n") == 1 + await conn.fetchval(
        "select last_sequence from wallets where company_id = $1", company
    )


async def test_export_of_an_empty_range_is_just_the_header(stubs: Stubs) -> None:
    company = await stubs.new_company()
    text = await export_text(stubs, company, start_time=datetime.now(UTC) - timedelta(days=1))
    assert text == ",".join(HEADER) + "\r\n"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize(
    "text",
    [
        'refund;=HYPERLINK("http://x")',  # a new cell in a ';' locale if left unquoted
        "a; +1",
        " =1+1",  # a leading space some spreadsheets strip
        "\u00a0@SUM(A1)",
        "x,y;-2",
        'say "hi";@x',
    ],
)
def test_cells_a_semicolon_or_a_leading_space_would_make_a_formula_read_back_as_one_text_cell(
    text: str,
) -> None:
    line = ",".join(["1", csv_cell(safe_text(text)), "2"]) + "\r\n"
    # Read by a ',' reader (ours) and by a ';' reader (a spreadsheet in a semicolon locale).
    (row,) = csv.reader(io.StringIO(line, newline=""))
    assert len(row) == 3 and row[1].replace("'", "") == text.replace("'", "")
    (as_semicolon_locale,) = csv.reader(io.StringIO(line, newline=""), delimiter=";")
    for cell in (*row, *as_semicolon_locale):
        assert not cell.lstrip(' \u00a0"').startswith(FORMULA_STARTS), (text, cell)


@pytest.mark.parametrize(
    "text", ["Auto-recharge from Visa •••• 4242", "pi_3Mtw", "credit 5.00 - goodwill", ""]
)
def test_ordinary_text_is_left_as_it_is(text: str) -> None:
    assert safe_text(text) == text
    assert csv_cell(text) == text
