"""Load generator for RecordUsage, run as its own process against a real server.

    python3 dev.py run python bench/record_usage.py                    # starts Postgres and a server here
    python3 dev.py run python bench/record_usage.py --quick --json out.json
    python3 dev.py run python bench/record_usage.py --target HOST:PORT [--database-url URL]
    python3 dev.py run python bench/record_usage.py --workers 1,2,4    # the phases for each server count
    python3 dev.py run python bench/record_usage.py --quick --profile DIR   # py-spy of the server per phase

It measures, against the same server and the same Postgres in one run, each at --in-flight calls:
  * check                    the health Check: a unary RPC that does no work (the baseline);
  * unary_hot                RecordUsage on one hot wallet;
  * unary_spread             RecordUsage spread over 10,000 wallets;
  * batch100_hot             RecordUsageBatch of 100 usages on one hot wallet;
  * batch1000_hot            RecordUsageBatch of 1,000 usages on one hot wallet;
  * db_single_statement_hot  straight to Postgres with asyncpg: one single-statement debit transaction
                             per event on one hot row at --in-flight connections (no group commit: the
                             limit that only group commit can beat).
Every wallet is credited $1,000 first (through credit_wallet(), as CreditWallet does), so no debit of the
run crosses a minimum: the phases measure the steady state, not a recharge per wallet.
Each phase prints events/s, p50 and p99 of a call, and its rate as a ratio of Check's; --json PATH writes
the same figures. Every phase is bounded in calls and seconds and talks only to 127.0.0.1 (or --target).
The load comes from --client-processes processes of its own (default 2, bench/record_usage_client.py),
so that one client's event loop does not limit a phase; the server and Postgres are processes of their
own. Each phase also prints where the CPU went per event (server, Postgres, clients, the rest of the
machine, from /proc) and, from the server's /metrics, how many record_usages() calls the group commit
made and their mean size.

With --workers, the phases run against `serve --workers N` for each N in turn (bench/servers.py), on one
database, and a last table gives each phase's rate as a ratio to the first count, with the cores available.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
from consofta.billing.v1 import (
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from google.type.money_pb2 import Money

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.cpu_time import process_cpu_s
from bench.record_usage_client import PhaseSpec, run_worker
from bench.server_profile import profiled, py_spy
from service.db.embedded import DATABASE_NAME, EmbeddedPostgres
from service.db.pool import ensure_database, with_database
from tests.support.process import ServiceProcess

# The comparator's own database on the same Postgres, so that its hot row is not a wallet of ours.
COMPARATOR_DATABASE = "billing_bench_comparator"


@dataclass
class Result:
    name: str
    calls: int
    events_per_call: int
    seconds: float
    latencies_ms: list[float]

    @property
    def events_per_s(self) -> float:
        return self.calls * self.events_per_call / self.seconds

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def figures(self, baseline: Result | None) -> dict[str, float]:
        return {
            "events_per_s": round(self.events_per_s, 1),
            "p50_ms": round(self.quantile_ms(0.5), 3),
            "p99_ms": round(self.quantile_ms(0.99), 3),
            "ratio_to_check": round(self.events_per_s / baseline.events_per_s, 4) if baseline else 1.0,
            "calls": self.calls,
            "events_per_call": self.events_per_call,
        }


async def run_phase(
    name: str,
    call: Callable[[int], Awaitable[object]],
    in_flight: int,
    max_calls: int,
    max_seconds: float,
    events_per_call: int = 1,
) -> Result:
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        nonlocal issued
        while issued < max_calls and time.perf_counter() < deadline:
            n = issued
            issued += 1
            t0 = time.perf_counter()
            await call(n)
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return Result(name, len(latencies), events_per_call, time.perf_counter() - started, latencies)


def report(result: Result, baseline: Result | None) -> None:
    ratio = f"{result.events_per_s / baseline.events_per_s:6.3f} x Check" if baseline else "   (baseline)"
    print(
        f"{result.name:<40} {result.events_per_s:9.0f} events/s   p50 {result.quantile_ms(0.5):7.2f} ms"
        f"   p99 {result.quantile_ms(0.99):7.2f} ms   {ratio}   ({result.calls} calls)",
        flush=True,
    )


# Every bench wallet is pre-loaded, as a company's wallet is in use, so that the phases measure the
# steady state: a debit that crosses the minimum (its event, NOTIFY and the recharge loop's planning)
# is the exception, not every wallet's first debit.
PRELOAD_NANOS = 1_000 * 1_000_000_000


async def seed_wallets(database_url: str, prefix: str, count: int) -> None:
    """`count` companies with wallets, as CreateWallet makes them, each credited PRELOAD_NANOS as
    CreditWallet does (the real credit_wallet(), so the ledger holds the credit), in four statements."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                """
                insert into companies (company_id, display_name, create_request_id)
                select $1 || n, $1 || n, $1 || n from generate_series(0, $2 - 1) n
                """,
                prefix,
                count,
            )
            await conn.execute(
                "insert into wallets (company_id) select $1 || n from generate_series(0, $2 - 1) n",
                prefix,
                count,
            )
            await conn.execute(
                "insert into billing_settings (company_id) select $1 || n from generate_series(0, $2 - 1) n",
                prefix,
                count,
            )
        await conn.execute(
            """
            select count(*) from (
                select credit_wallet(
                           p_company_id => $1 || n, p_request_id => 'bench-preload',
                           p_request_hash => sha256(($1 || n)::bytea), p_entry_type => 'manual_credit',
                           p_amount_nanos => $3, p_reason => 'bench preload', p_actor => 'bench',
                           p_principal_id => 'bench')
                  from generate_series(0, $2 - 1) n) seeded
            """,
            prefix,
            count,
            PRELOAD_NANOS,
        )
    finally:
        await conn.close()


async def db_single_statement_phase(admin_url: str, in_flight: int, seconds: float) -> Result:
    """One single-statement debit transaction per event on one hot row, at `in_flight` connections."""
    await ensure_database(admin_url, COMPARATOR_DATABASE)
    url = with_database(admin_url, COMPARATOR_DATABASE)
    setup = await asyncpg.connect(url)
    try:
        await setup.execute(
            "create table if not exists hot_wallet (id int primary key, balance_nanos bigint not null)"
        )
        await setup.execute(
            "insert into hot_wallet values (1, 0) on conflict (id) do update set balance_nanos = 0"
        )
    finally:
        await setup.close()
    conns = await asyncio.gather(*(asyncpg.connect(url) for _ in range(in_flight)))
    try:
        free = list(conns)
        debit = "update hot_wallet set balance_nanos = balance_nanos - 675000 where id = 1"

        async def call(_n: int) -> None:
            conn = free.pop()
            try:
                await conn.execute(debit)
            finally:
                free.append(conn)

        return await run_phase("db: 1-statement debit, 1 hot row", call, in_flight, 10_000_000, seconds)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


def _postgres_pids(postmaster: int | None) -> list[int]:
    """The postmaster and its children (backends, walwriter...); with no known postmaster, every
    process named postgres on the machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rpartition(")")[2].split()[1])
        if postmaster is None and name.startswith("postgres"):
            pids.append(int(entry.name))
        elif postmaster is not None and (int(entry.name) == postmaster or ppid == postmaster):
            pids.append(int(entry.name))
    return pids


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Where a phase's CPU went: the server process, Postgres, the client processes, and the rest of the
    machine (other work sharing the cores)."""

    def __init__(self, server_pid: int | None, postmaster_pid: int | None) -> None:
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid

    def sample(self) -> tuple[float, float, float]:
        server = process_cpu_s(self.server_pid) if self.server_pid else float("nan")
        postgres = sum(process_cpu_s(pid) for pid in _postgres_pids(self.postmaster_pid))
        return server, postgres, _machine_busy_s()


def _batch_sizes(metrics_port: int | None) -> dict[str, float]:
    """The group commit's batch-size histogram from the server's /metrics (cumulative buckets)."""
    if metrics_port is None:
        return {}
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("billing_usage_batch_size_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(("billing_usage_batch_size_count", "billing_usage_batch_size_sum")):
            out[line.split(" ", 1)[0].rsplit("_", 1)[1]] = float(line.rsplit(" ", 1)[1])
    return out


def _batch_size_note(before: dict[str, float], after: dict[str, float]) -> dict[str, object]:
    """Rounds in the phase, their mean size, and the share of rounds up to each bucket's bound."""
    rounds = after.get("count", 0.0) - before.get("count", 0.0)
    if rounds <= 0:
        return {}
    usages = after.get("sum", 0.0) - before.get("sum", 0.0)
    share = {
        le: round((after[le] - before.get(le, 0.0)) / rounds, 3) for le in after if le not in ("count", "sum")
    }
    return {"rounds": int(rounds), "mean_size": round(usages / rounds, 1), "share_at_most": share}


class Clients:
    """The client processes: spawned once, each phase split over all of them."""

    def __init__(self, processes: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.processes = processes
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))

    async def run(self, name: str, spec: PhaseSpec, events_per_call: int = 1) -> tuple[Result, float]:
        """The phase's Result, and the CPU seconds the client processes used."""
        loop = asyncio.get_running_loop()
        # Every worker starts at this moment, after its channels exist (spawning takes a while the first
        # time).
        start_at = time.time() + 1.0
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, run_worker, spec, i, self.processes, start_at)
                for i in range(self.processes)
            )
        )
        latencies = [ms for part in parts for ms in part.latencies_ms]
        seconds = max(part.seconds for part in parts)
        calls = sum(part.calls for part in parts)
        return Result(name, calls, events_per_call, seconds, latencies), sum(p.cpu_s for p in parts)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


async def bench(
    target: str,
    database_url: str | None,
    admin_url: str | None,
    in_flight: int,
    seconds: float,
    wallets: int,
    channels: int,
    client_processes: int = 2,
    server: ServiceProcess | None = None,
    postmaster_pid: int | None = None,
    profile_dir: Path | None = None,
) -> dict[str, dict[str, object]]:
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-{run}-"
    phases: dict[str, dict[str, object]] = {}
    clients = Clients(client_processes)
    meter = CpuMeter(server.proc.pid if server and server.proc else None, postmaster_pid)
    metrics_port = server.metrics_port if server else None

    def spec(kind: str, **kw: object) -> PhaseSpec:
        base: dict[str, object] = dict(
            kind=kind, target=target, in_flight=in_flight, seconds=seconds, max_calls=10**7, channels=channels
        )
        base.update(kw)
        return PhaseSpec(**base)  # type: ignore[arg-type]

    async def measured(key: str, label: str, phase: PhaseSpec, per_call: int = 1) -> Result:
        sizes0 = _batch_sizes(metrics_port)
        cpu0 = meter.sample()
        if profile_dir is not None and server is not None and server.proc is not None:
            with profiled(server.proc.pid, profile_dir / f"{key}.txt"):
                result, client_cpu = await clients.run(label, phase, per_call)
        else:
            result, client_cpu = await clients.run(label, phase, per_call)
        cpu1 = meter.sample()
        figures: dict[str, object] = dict(result.figures(baseline))
        events = max(1, result.calls * per_call)
        server_s, postgres_s, machine_s = (b - a for a, b in zip(cpu0, cpu1, strict=True))
        other_s = machine_s - server_s - postgres_s - client_cpu
        figures["cpu_ms_per_event"] = {
            "server": round(1000 * server_s / events, 3),
            "postgres": round(1000 * postgres_s / events, 3),
            "clients": round(1000 * client_cpu / events, 3),
            "rest_of_machine": round(1000 * other_s / events, 3),
        }
        figures["cpu_cores_busy"] = {
            "server": round(server_s / result.seconds, 2),
            "postgres": round(postgres_s / result.seconds, 2),
            "clients": round(client_cpu / result.seconds, 2),
            "rest_of_machine": round(other_s / result.seconds, 2),
        }
        sizes = _batch_size_note(sizes0, _batch_sizes(metrics_port))
        if sizes:
            figures["batch_sizes"] = sizes
        report(result, baseline)
        print(
            "    cpu ms/event: "
            + ", ".join(f"{k} {v}" for k, v in figures["cpu_ms_per_event"].items())  # type: ignore[attr-defined]
            + ("" if not sizes else f"; {sizes['rounds']} record_usages() calls, mean {sizes['mean_size']}"),
            flush=True,
        )
        phases[key] = figures
        return result

    baseline: Result | None = None
    try:
        await clients.run("warm-up", spec("check", seconds=3, max_calls=2000))
        baseline = await measured("check", "health Check (no work)", spec("check"))

        print(f"creating {wallets:,} wallets ...", flush=True)
        if database_url is not None:
            await seed_wallets(database_url, prefix, wallets)
        else:
            chan = grpc.aio.insecure_channel(target)
            wallet = wallet_service_pb2_grpc.WalletServiceStub(chan)

            async def create(n: int) -> object:
                company = f"{prefix}{n}"
                await wallet.CreateWallet(
                    wallet_service_pb2.CreateWalletRequest(
                        company_id=company, display_name=company, request_id=company
                    )
                )
                return await wallet.CreditWallet(
                    wallet_service_pb2.CreditWalletRequest(
                        company_id=company,
                        amount=Money(currency_code="USD", units=PRELOAD_NANOS // 1_000_000_000),
                        reason="bench preload",
                        request_id="bench-preload",
                    )
                )

            created = await run_phase("CreateWallet", create, in_flight, wallets, 600)
            await chan.close()
            assert created.calls == wallets, "wallet creation did not finish in time"

        hot = dict(prefix=prefix, wallets=1)
        await clients.run("warm-up", spec("unary", seconds=2, max_calls=1000, tag=f"warm-{run}", **hot))
        results: dict[str, Result] = {}
        results["unary_hot"] = await measured(
            "unary_hot", "RecordUsage, 1 hot wallet", spec("unary", tag=f"hot-{run}", **hot)
        )
        await measured(
            "batch100_hot",
            "RecordUsageBatch of 100, 1 hot wallet",
            spec("batch", size=100, tag=f"b100-{run}", **hot),
            100,
        )
        # 64 batches of 1,000 in flight would only queue up in the server: 8 keep it saturated.
        await measured(
            "batch1000_hot",
            "RecordUsageBatch of 1,000, 1 hot wallet",
            spec("batch", size=1000, tag=f"b1000-{run}", in_flight=min(in_flight, 8), **hot),
            1000,
        )
        # Last of the server phases: it touches 10,000 wallets, whose rows and index pages then crowd
        # the hot wallet's out of the caches.
        await measured(
            "unary_spread",
            f"RecordUsage, {wallets:,} wallets",
            spec("unary", tag=f"spread-{run}", prefix=prefix, wallets=wallets),
        )
        assert baseline is not None
        if admin_url is not None:
            db = await db_single_statement_phase(admin_url, in_flight, seconds)
            report(db, baseline)
            phases["db_single_statement_hot"] = dict(db.figures(baseline))
            print(
                f"\nunary hot wallet / direct database comparator = "
                f"{results['unary_hot'].events_per_s / db.events_per_s:.3f}",
                flush=True,
            )
        else:
            print("db_single_statement_hot: skipped (give --database-url with --target)", flush=True)
        print(
            f"{in_flight} calls in flight (batch of 1,000: {min(in_flight, 8)}) over {channels} channels "
            f"per client process, {client_processes} client processes (the db comparator: this process); "
            f"unary hot-wallet p99 / Check p99 = "
            f"{results['unary_hot'].quantile_ms(0.99) / baseline.quantile_ms(0.99):.2f}",
            flush=True,
        )
    finally:
        clients.close()
    return phases


@contextlib.asynccontextmanager
async def bench_server(
    database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[ServiceProcess]:
    """A real `consofta-billing serve` process on a free port against `database_url`, stopped with
    SIGTERM on exit. `extra_env` adds or overrides settings (BILLING_...)."""
    env = {
        "DATABASE_URL": database_url,
        "BILLING_LOG_LEVEL": "warning",
        "BILLING_DB_POOL_MAX_SIZE": "16",
        # No real money moves in a bench: the sandbox provider, chosen explicitly as the service requires.
        "BILLING_PAYMENT_PROVIDER": "sandbox",
        "BILLING_ALLOW_SANDBOX": "1",
        **(extra_env or {}),
    }
    server = ServiceProcess(env, workdir / "server.log")
    server.start()
    try:
        await server.wait_serving()
        print(f"server pid {server.proc.pid if server.proc else '?'} at {server.target}", flush=True)
        yield server
    finally:
        server.signal(signal.SIGTERM)
        await server.wait_exit()


@contextlib.asynccontextmanager
async def bench_postgres(workdir: Path) -> AsyncIterator[str]:
    """An admin URL: BILLING_BENCH_DATABASE_URL's, or an embedded Postgres started for this run."""
    given = os.environ.get("BILLING_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    embedded = EmbeddedPostgres(workdir / "pgdata")
    admin_url = await asyncio.to_thread(embedded.start)
    try:
        yield admin_url
    finally:
        await asyncio.to_thread(embedded.stop)


def _postmaster_pid(pgdata: Path) -> int | None:
    """The embedded Postgres's postmaster, when this run started one."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


async def bench_workers(counts: list[int], args: argparse.Namespace, seconds: float) -> None:
    from bench.servers import bench_database, cores_note, served

    print(cores_note(), flush=True)
    runs: dict[int, dict[str, dict[str, object]]] = {}
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)
        async with bench_database(Path(tmp)) as url:
            for n in counts:
                async with served(url, workers=n, log_dir=Path(tmp)) as target:
                    print(f"\n== serve --workers {n} at {target}", flush=True)
                    runs[n] = await bench(
                        target,
                        url,
                        url,
                        args.in_flight,
                        seconds,
                        args.wallets,
                        args.channels,
                        args.client_processes,
                    )
    base = runs[counts[0]]
    print(f"\nrates by server processes, as a ratio to {counts[0]}; {cores_note()}")
    for phase in base:
        rate = {n: float(runs[n][phase]["events_per_s"]) for n in counts}  # type: ignore[arg-type]
        cells = "   ".join(f"{n}: {rate[n]:8.0f}/s {rate[n] / rate[counts[0]]:5.2f}x" for n in counts)
        print(f"{phase:<24} {cells}", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"workers": {str(n): runs[n] for n in counts}, "cores": cores_note()}, indent=2) + "\n"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", help="HOST:PORT of a running server; default: start one here")
    parser.add_argument(
        "--database-url", help="with --target: the server's database, for seeding and the db comparator"
    )
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--quick", action="store_true", help="every phase in about 60 s in all")
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=8, help="gRPC channels per client process")
    parser.add_argument(
        "--client-processes", type=int, default=2, help="processes that send the load (default 2)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="a py-spy profile of the server per phase, DIR/<phase>.txt (bench/server_profile.py)",
    )
    parser.add_argument(
        "--workers",
        type=lambda v: [int(n) for n in v.split(",")],
        help="server process counts to compare, e.g. 1,2,4 (serve --workers N each)",
    )
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    if args.profile is not None:
        if args.target:
            parser.error("--profile samples a server started here: leave out --target")
        py_spy()
    if args.workers:
        await bench_workers(args.workers, args, seconds)
        return
    load_before = os.getloadavg()
    started = time.monotonic()
    if args.target:
        admin_url = args.database_url
        phases = await bench(
            args.target,
            args.database_url,
            admin_url,
            args.in_flight,
            seconds,
            args.wallets,
            args.channels,
            args.client_processes,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
            os.chmod(tmp, 0o755)
            async with bench_postgres(Path(tmp)) as admin_url:
                # A database of this run's own on a shared server; the embedded one is ours anyway.
                name = (
                    DATABASE_NAME
                    if "BILLING_BENCH_DATABASE_URL" not in os.environ
                    else f"billing_bench_{uuid.uuid4().hex[:8]}"
                )
                await ensure_database(admin_url, name)
                database_url = with_database(admin_url, name)
                async with bench_server(database_url, Path(tmp)) as server:
                    phases = await bench(
                        server.target,
                        database_url,
                        admin_url,
                        args.in_flight,
                        seconds,
                        args.wallets,
                        args.channels,
                        args.client_processes,
                        server=server,
                        postmaster_pid=_postmaster_pid(Path(tmp) / "pgdata"),
                        profile_dir=args.profile,
                    )
    took_s = time.monotonic() - started
    print(f"took {took_s:.0f} s; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "phases": phases,
                    "in_flight": args.in_flight,
                    "client_processes": args.client_processes,
                    "seconds_per_phase": seconds,
                    "load_average_before": load_before[0],
                    "load_average_after": os.getloadavg()[0],
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    asyncio.run(main())
