"""What one record_usages() call costs Postgres, by items per call: the backend's CPU from /proc, on one
connection with nothing else running, in alternating blocks.

    python3 dev.py run python bench/record_usages_cost.py                        # embedded Postgres
    python3 dev.py run python bench/record_usages_cost.py --sizes 1,8,1000 --without triggers,foreign_keys
    BILLING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python3 dev.py run python bench/record_usages_cost.py                    # a scratch database there

It says what a group commit costs the database, apart from the server and the clients, and what one hot
wallet can take at most: calls on one wallet are serialized by its row lock, so items per call divided
by the backend CPU per call bounds its events per second, whatever the server does.

`--without triggers` runs each size again with the user triggers of usage_records and ledger_entries
disabled, `--without foreign_keys` with their foreign-key checks disabled (`both`: neither), in the
scratch database only, to show what each part costs, as a ratio of the shipped schema's figure measured
in the same run. Those variants record debits that no trigger accounted for: they are for measuring,
never for a database that is used.

The Postgres server must be on this machine (its backend's /proc entry is read). Each figure is the
median (and the least) of the blocks; a block is as many calls as make about a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.cpu_time import process_cpu_s
from bench.servers import cores_note, scratch_database
from service.app.proposed_ids import proposed_ids
from service.app.record_usage import RecordUsageCommand, sql_arguments
from service.app.usage_batch_rounds import RECORD_USAGES_SQL
from service.app.wallets import create_wallet
from service.domain.usage_kinds import EmailUsage

COMPANY = "cost-co"
TABLES = ("usage_records", "ledger_entries")
# Each variant's ALTER TABLE clauses, applied to both tables after every trigger is enabled again.
VARIANTS: dict[str, tuple[str, ...]] = {
    "as_shipped": (),
    "without_triggers": ("disable trigger user",),
    "without_foreign_keys": ("disable trigger all", "enable trigger user"),
    "without_both": ("disable trigger all",),
}
CHOICES = {"triggers": "without_triggers", "foreign_keys": "without_foreign_keys", "both": "without_both"}
BLOCK_S = 1.0


def backend_is_here(pid: int) -> bool:
    # A remote server's backend pid may name some other process here: it must be a postgres one.
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("postgres")
    except OSError:
        return False


class Calls:
    """record_usages() calls of `size` one-email items with fresh keys, each in its own transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._serial = 0

    def _columns(self, size: int) -> list[list[object]]:
        ids = proposed_ids(size)
        now = datetime.now(UTC)
        rows = []
        for n in range(size):
            self._serial += 1
            cmd = RecordUsageCommand(COMPANY, f"cost-{self._serial}", EmailUsage(1), None, now)
            rows.append(sql_arguments(cmd, ids[n]))
        return [list(column) for column in zip(*rows, strict=True)]

    async def run(self, size: int, count: int) -> tuple[float, float]:
        """Backend CPU and wall time of `count` calls, in seconds; the arguments are built beforehand."""
        arguments = [self._columns(size) for _ in range(count)]
        pid = self._conn.get_server_pid()
        cpu0, wall0 = process_cpu_s(pid), time.perf_counter()
        for columns in arguments:
            async with self._conn.transaction():
                results = await self._conn.fetch(RECORD_USAGES_SQL, *columns)
            failed = next((r for r in results if r["outcome"] != "recorded"), None)
            if failed is not None:  # the figures would be of some other work
                raise SystemExit(f"an item was not recorded: {failed['outcome']} {failed['error_message']}")
        return process_cpu_s(pid) - cpu0, time.perf_counter() - wall0


async def set_variant(conn: asyncpg.Connection, variant: str) -> None:
    for table in TABLES:
        await conn.execute(f"alter table {table} enable trigger all")
        for clause in VARIANTS[variant]:
            await conn.execute(f"alter table {table} {clause}")


async def measure(
    url: str, sizes: list[int], variants: list[str], rounds: int
) -> dict[str, dict[str, dict[str, float]]]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await create_wallet(pool, COMPANY, "Cost", "create-cost-co")
    finally:
        await pool.close()
    conn = await asyncpg.connect(url)
    calls = Calls(conn)
    try:
        if not backend_is_here(conn.get_server_pid()):
            raise SystemExit("the Postgres backend is not on this machine: its CPU cannot be read")
        figures: dict[str, dict[str, dict[str, float]]] = {}
        for size in sizes:
            # Calls per block, from a timed first block of the shipped variant.
            await set_variant(conn, variants[0])
            _, wall = await calls.run(size, 5)
            count = max(3, round(BLOCK_S / (wall / 5)))
            cpu: dict[str, list[float]] = {v: [] for v in variants}
            walls: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(rounds):
                for variant in variants:
                    await set_variant(conn, variant)
                    await calls.run(size, 3)  # plans made again after the ALTER
                    spent, wall = await calls.run(size, count)
                    cpu[variant].append(spent / count)
                    walls[variant].append(wall / count)
            figures[str(size)] = {}
            shipped = statistics.median(cpu["as_shipped"])
            for variant in variants:
                median = statistics.median(cpu[variant])
                row = {
                    "backend_cpu_ms_per_call": round(median * 1000, 3),
                    "ratio_to_as_shipped": round(median / shipped, 3) if shipped else 0.0,
                    "least_backend_cpu_ms_per_call": round(min(cpu[variant]) * 1000, 3),
                    "wall_ms_per_call": round(statistics.median(walls[variant]) * 1000, 3),
                    "backend_cpu_us_per_item": round(median * 1e6 / size, 1),
                    "hot_wallet_ceiling_events_per_s": round(size / median) if median else 0,
                }
                figures[str(size)][variant] = row
                print(
                    f"{size:5d} items per call  {variant:21s}"
                    f" backend CPU {row['backend_cpu_ms_per_call']:8.2f} ms per call"
                    f" (least {row['least_backend_cpu_ms_per_call']:.2f},"
                    f" {row['ratio_to_as_shipped']:.2f} x as shipped),"
                    f" {row['backend_cpu_us_per_item']:7.1f} us per item,"
                    f" wall {row['wall_ms_per_call']:8.2f} ms;"
                    f" one hot wallet at most {row['hot_wallet_ceiling_events_per_s']:,} events/s",
                    flush=True,
                )
        await set_variant(conn, "as_shipped")
        return figures
    finally:
        await conn.close()


def variants_of(without: str) -> list[str]:
    chosen = ["as_shipped"]
    for name in filter(None, without.split(",")):
        if name not in CHOICES:
            raise SystemExit(f"--without takes {', '.join(CHOICES)}, not {name[:20]!r}")
        chosen.append(CHOICES[name])
    return chosen


def sizes_of(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise SystemExit(f"--sizes takes numbers of items, comma-separated, not {text[:20]!r}") from None
    if not sizes or any(not 1 <= s <= 1000 for s in sizes):
        raise SystemExit("--sizes: each size must be 1 to 1000 items, as the usage batcher sends")
    return sizes


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,4,8,100,1000", help="items per call, comma-separated")
    parser.add_argument("--without", default="", help="also measure without: triggers, foreign_keys, both")
    parser.add_argument("--rounds", type=int, default=5, help="blocks per size and variant")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    sizes, variants = sizes_of(args.sizes), variants_of(args.without)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    print(cores_note(), flush=True)
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        async with scratch_database(Path(tmp)) as url:
            figures = await measure(url, sizes, variants, args.rounds)
    if args.json:
        args.json.write_text(json.dumps({"sizes": figures}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
