"""ExportWalletTransactions: a wallet's ledger as CSV, streamed in chunks of whole rows.

Memory stays constant whatever the size of the export: the entries are read in keyset pages
(`sequence > last one sent ... limit PAGE_ROWS`), each page is turned into CSV and handed to the caller
before the next is read, and a connection is held only for the duration of one page query, so a slow
reader never pins a pooled connection. The range is fixed up front as a sequence range, so entries
posted while the export runs do not change it, and its rows sum to the balance movement of the range.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from service.app.reporting.companies import require_wallet
from service.app.reporting.ledger_range import boundary_before, newest_boundary
from service.domain.money import format_usd

PAGE_ROWS = 2000
# A chunk is sent when it reaches this size even mid-page, to stay far below gRPC's 4 MiB message limit
# whatever the descriptions hold.
MAX_CHUNK_BYTES = 256 * 1024
HEADER = (
    "posted_at",
    "ledger_sequence",
    "entry_type",
    "description",
    "amount_usd",
    "balance_after_usd",
    "reference",
)
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Spreadsheets in locales whose list separator is ';' split an unquoted cell there, and may strip the
# spaces before a cell's first character: both can start a new formula inside our text.
_FORMULA_LEADING_SPACE = " \u00a0"
# What may stand before a field's first character and still let it start a formula.
_FORMULA_LEADING_CHARS = _FORMULA_LEADING_SPACE + '"'
# A cell holding one of these is quoted (RFC 4180, plus ';' for those locales and edge spaces).
_QUOTE_WHEN = frozenset(',;"\r\n')

_PAGE_SQL = """
    select sequence, created_at, entry_type, description, amount_nanos, balance_after_nanos, reference
      from ledger_entries
     where company_id = $1 and sequence > $2 and sequence <= $3
     order by sequence
     limit $4
"""


@dataclass(frozen=True)
class CsvChunk:
    data: bytes
    row_count: int


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_text(value: str | None) -> str:
    """A text cell no spreadsheet evaluates as a formula (OWASP's leading apostrophe).

    A spreadsheet whose list separator is ';' splits the line there whatever our quoting (the quote is
    not at the start of its field), and may strip the spaces (or a quote) before a field's first
    character. So every ';'-separated part of the text that would start with a formula character gets
    the apostrophe, not only the start of the cell.
    """
    parts = (value or "").split(";")
    return ";".join(
        "'" + part if part.lstrip(_FORMULA_LEADING_CHARS).startswith(_FORMULA_PREFIXES) else part
        for part in parts
    )


def csv_cell(text: str) -> str:
    """One CSV field: quoted (quotes doubled) when it holds a separator, a quote, a line break or an
    edge space, so that no reader, whatever its list separator, splits or trims it."""
    if _QUOTE_WHEN.isdisjoint(text) and text == text.strip(_FORMULA_LEADING_SPACE):
        return text
    return '"' + text.replace('"', '""') + '"'


def csv_row(entry: asyncpg.Record) -> list[str]:
    return [
        iso_utc(entry["created_at"]),
        str(entry["sequence"]),
        entry["entry_type"],
        safe_text(entry["description"]),
        format_usd(entry["amount_nanos"]),
        format_usd(entry["balance_after_nanos"]),
        safe_text(entry["reference"]),
    ]


class _ChunkWriter:
    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self.rows = 0

    def write(self, row: list[str] | tuple[str, ...], *, is_entry: bool = True) -> None:
        self._buffer.write(",".join(csv_cell(cell) for cell in row) + "\r\n")
        self.rows += 1 if is_entry else 0

    @property
    def size(self) -> int:
        return self._buffer.tell()

    def take(self) -> CsvChunk:
        chunk = CsvChunk(self._buffer.getvalue().encode("utf-8"), self.rows)
        self._buffer = io.StringIO()
        self.rows = 0
        return chunk


async def export_ledger(
    pool: asyncpg.Pool,
    company_id: str,
    start: datetime | None,
    end: datetime | None,
    page_rows: int = PAGE_ROWS,
) -> AsyncIterator[CsvChunk]:
    """CSV chunks for the entries posted in [start, end); the first chunk starts with the header."""
    async with pool.acquire() as conn:
        await require_wallet(conn, company_id)
        low = 0 if start is None else (await boundary_before(conn, company_id, start)).sequence
        high_boundary = (
            await newest_boundary(conn, company_id)
            if end is None
            else await boundary_before(conn, company_id, end)
        )
    high = high_boundary.sequence
    writer = _ChunkWriter()
    writer.write(HEADER, is_entry=False)
    after = low
    while after < high:
        page = await pool.fetch(_PAGE_SQL, company_id, after, high, page_rows)
        for entry in page:
            writer.write(csv_row(entry))
            if writer.size >= MAX_CHUNK_BYTES:
                yield writer.take()
        if not page:
            break
        after = page[-1]["sequence"]
        if writer.rows:
            yield writer.take()
    if writer.size:
        yield writer.take()
