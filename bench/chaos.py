"""The fault harness: real server processes under load and under faults, then a consistency checker.

    python3 dev.py run python bench/chaos.py --quick --json out.json     # about 90 s, every fault kind
    python3 dev.py run python bench/chaos.py --duration-s 600            # ten minutes of load

Everything runs on loopback, bounded in time (--duration-s) and requests (--max-requests):

* a Postgres of its own (embedded, in a temporary folder), which the faults stop and restart;
* the fake Stripe (tests/support/fake_stripe.py), in this process, with the recharge loop on;
* a primary `consofta-billing serve` behind a TCP proxy that can lose responses, and later a second
  replica on the same database;
* N concurrent clients (the real client library, with its retries) running the workloads of
  bench/chaos_workloads.py over a few hot and many cold wallets, journaling every answer and error.

Faults, each at a random moment, in a shuffled order that has every kind: SIGKILL of a server and a
restart; SIGTERM during load; Postgres stopped in immediate mode and restarted; pg_terminate_backend of
the servers' connections; a lost response (connection reset, or a stalled stream) at the proxy; Stripe
answering 500, 429, dropping the connection after the charge, and declining; a second replica started.

Then the checker (bench/chaos_checker.py) reads the journal and the database. The table (and --json)
gives faults by kind, acknowledged events, lost, duplicated, unknown outcomes resolved and invariant
violations; the exit code is 1 if any of the last three is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
from consofta.billing.client import AsyncBillingClient, RetryPolicy, money
from consofta.billing.v1 import settings_service_pb2
from google.protobuf import field_mask_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.chaos_checker import Verdict, check
from bench.chaos_workloads import WORKLOADS, ClientContext, Journal, Workload
from service.db.embedded import DATABASE_NAME, EmbeddedPostgres
from service.db.migrate import migrate
from service.db.pool import ensure_database, with_database
from service.logs import configure_logging
from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, ChargeOutcome, FakeStripe
from tests.support.lossy_proxy import LossyProxy
from tests.support.process import ServiceProcess

FAULT_KINDS = (
    "server_sigkill",
    "server_sigterm",
    "postgres_immediate_stop",
    "terminate_backends",
    "lost_response",
    "stripe_faults",
    "second_replica",
)
NANOS_PER_USD = 1_000_000_000


@dataclass(frozen=True)
class Options:
    duration_s: float = 60.0
    clients: int = 12
    hot_wallets: int = 3
    cold_wallets: int = 200
    # Wallets with a card, auto-recharge on and a high minimum: the recharge loop charges them.
    recharging_wallets: int = 8
    max_requests: int = 2_000_000
    faults: tuple[str, ...] = FAULT_KINDS
    # Each kind at least once; then more at random until about one fault every `fault_every_s`.
    fault_every_s: float = 6.0
    # Every workload the contract supports (the batch RPC joins once it exists).
    workloads: tuple[str, ...] = tuple(WORKLOADS)
    seed: int | None = None
    replay_limit: int = 100_000
    work_dir: Path | None = None
    verbose: bool = True


QUICK = Options(duration_s=45.0, fault_every_s=5.0)


@dataclass
class Report:
    faults: Counter[str]
    verdict: Verdict
    requests: int
    seconds: float
    seed: int
    load_s: float

    def as_json(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "acknowledged": v.acknowledged,
            "lost": v.lost,
            "duplicated": v.duplicated,
            "unknown_outcomes": v.unknown,
            "unknown_outcomes_applied": v.unknown_applied,
            "unknown_outcomes_resolved": v.unknown_resolved,
            "invariant_violations": len(v.violations),
            "violations": v.violations[:200],
            "replays_checked": v.replays_checked,
            "holds_captured": v.holds_captured,
            "second_captures_refused": v.recaptures_refused,
            "recharge_attempts": v.recharge_attempts,
            "recharge_credits": v.recharge_credits,
            "stripe_charges_succeeded": v.charges_succeeded,
            "requests": self.requests,
            "load_s": round(self.load_s, 1),
            "seconds": round(self.seconds, 1),
            "seed": self.seed,
        }

    @property
    def clean(self) -> bool:
        return not (self.verdict.lost or self.verdict.duplicated or self.verdict.violations)

    def table(self) -> str:
        data = self.as_json()
        rows = [(f"fault: {kind}", str(n)) for kind, n in data["faults"].items()]
        rows += [
            ("faults injected", str(data["faults_total"])),
            ("requests sent", f"{data['requests']:,} in {data['load_s']} s of load"),
            ("acknowledged events", f"{data['acknowledged']:,}"),
            ("lost", str(data["lost"])),
            ("duplicated", str(data["duplicated"])),
            (
                "unknown outcomes resolved",
                f"{data['unknown_outcomes_resolved']} of {data['unknown_outcomes']}"
                f" ({data['unknown_outcomes_applied']} had been applied)",
            ),
            ("replays identical", f"{data['replays_checked']:,} checked"),
            (
                "holds captured once",
                f"{data['holds_captured']} ({data['second_captures_refused']} recaptures refused)",
            ),
            (
                "recharges",
                f"{data['recharge_attempts']} attempts, {data['recharge_credits']} credits, "
                f"{data['stripe_charges_succeeded']} Stripe charges",
            ),
            ("invariant violations", str(data["invariant_violations"])),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"  ! {v}" for v in self.verdict.violations[:20]]
        return "\n".join(lines)


class ChaosPostgres:
    """An embedded Postgres of the harness's own, which faults may stop in immediate mode."""

    def __init__(self, folder: Path) -> None:
        self.embedded = EmbeddedPostgres(folder / "pgdata")
        self.url = ""

    async def start(self) -> str:
        admin = await asyncio.to_thread(self.embedded.start)
        await ensure_database(admin, DATABASE_NAME)
        self.url = with_database(admin, DATABASE_NAME)
        conn = await asyncpg.connect(self.url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return self.url

    async def stop_immediately(self) -> None:
        """What `pg_ctl -m immediate stop` does: SIGQUIT to the postmaster, which kills every backend
        without a checkpoint (crash recovery at the next start). Sent directly: this pg_ctl build has
        been seen to crash in immediate mode."""
        pid_file = self.embedded.pgdata / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"postmaster {pid} did not stop after SIGQUIT")

    async def start_again(self) -> None:
        """Start it with the same options as the first start (socket folder, no TCP), so the servers' URL
        stays valid. The package gives pg_ctl 10 s, which crash recovery under load can outlast: then the
        postmaster is usually up moments later, so a few tries are made before giving up."""
        for attempt in range(1, 6):
            try:
                await asyncio.to_thread(self.embedded._server.ensure_postgres_running)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                if attempt == 5:
                    raise
                await asyncio.sleep(2.0)
            else:
                return

    async def terminate_backends(self) -> int:
        conn = await asyncpg.connect(self.url)
        try:
            return int(
                await conn.fetchval(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where application_name = 'consofta-billing' and pid <> pg_backend_pid()"
                )
            )
        finally:
            await conn.close()

    def stop(self) -> None:
        self.embedded.stop()


@dataclass
class Topology:
    pg: ChaosPostgres
    fake: FakeStripe
    primary: ServiceProcess
    proxy: LossyProxy
    replica: ServiceProcess
    replica_up: bool = False
    # Servers being restarted: clients avoid them until they serve again.
    down: set[str] = field(default_factory=set)


def _server_env(db_url: str, fake: FakeStripe) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "BILLING_LOG_LEVEL": "warning",
        "BILLING_DB_POOL_MAX_SIZE": "8",
        "BILLING_SHUTDOWN_GRACE_S": "2",
        "BILLING_HEALTH_PROBE_INTERVAL_S": "0.5",
        "BILLING_PAYMENT_PROVIDER": "stripe",
        "BILLING_STRIPE_SECRET_KEY": fake.api_key,
        "BILLING_STRIPE_WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
        "BILLING_STRIPE_API_BASE": fake.url,
        "BILLING_RECHARGE_SWEEP_INTERVAL_S": "1",
        "BILLING_RECHARGE_LEASE_S": "6",
        "BILLING_RECHARGE_RETRY_BACKOFF_S": "1,2,3",
        "BILLING_RECHARGE_UNKNOWN_RETRY_BACKOFF_S": "0.5,1,2",
    }


def _retry() -> RetryPolicy:
    # More patient than the default: a server restart under load takes a few seconds.
    return RetryPolicy(max_attempts=8, initial_backoff_s=0.05, max_backoff_s=1.0)


def _say(options: Options, text: str) -> None:
    if options.verbose:
        print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _setup_wallets(client: AsyncBillingClient, options: Options) -> tuple[list[str], list[str]]:
    hot = [f"hot-{i}" for i in range(options.hot_wallets)]
    cold = [f"cold-{i}" for i in range(options.cold_wallets)]
    limit = asyncio.Semaphore(16)

    async def create(company: str) -> None:
        async with limit:
            await client.create_wallet(company, company, idempotency_key=f"create-{company}")

    await asyncio.gather(*(create(company) for company in hot + cold))
    await asyncio.gather(
        *(_set_up_card(client, company) for company in (hot + cold)[: options.recharging_wallets])
    )
    return hot, cold


async def _set_up_card(client: AsyncBillingClient, company: str) -> None:
    await client.call(
        client.settings.UpdateBillingSettings,
        settings_service_pb2.UpdateBillingSettingsRequest(
            company_id=company,
            settings=settings_service_pb2.BillingSettings(
                minimum_balance=money(20 * NANOS_PER_USD), recharge_amount=money(25 * NANOS_PER_USD)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["minimum_balance", "recharge_amount"]),
            request_id=f"settings-{company}",
        ),
    )
    await client.call(
        client.settings.StartCardSetup,
        settings_service_pb2.StartCardSetupRequest(company_id=company, request_id=f"setup-{company}"),
    )
    await client.call(
        client.settings.SetDefaultCard,
        settings_service_pb2.SetDefaultCardRequest(
            company_id=company, payment_method_id="pm_card_visa", request_id=f"card-{company}"
        ),
    )


async def _restart(server: ServiceProcess, topology: Topology, name: str, sig: signal.Signals) -> None:
    topology.down.add(name)
    try:
        server.signal(sig)
        await server.wait_exit(timeout_s=30)
        server.start()
        await server.wait_serving(timeout_s=90)
    finally:
        topology.down.discard(name)


async def _inject(kind: str, topology: Topology, rng: random.Random, options: Options) -> None:
    if kind in ("server_sigkill", "server_sigterm"):
        sig = signal.SIGKILL if kind == "server_sigkill" else signal.SIGTERM
        pick = "replica" if topology.replica_up and rng.random() < 0.3 else "primary"
        server = topology.replica if pick == "replica" else topology.primary
        await _restart(server, topology, pick, sig)
    elif kind == "postgres_immediate_stop":
        await topology.pg.stop_immediately()
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        await topology.pg.start_again()
    elif kind == "terminate_backends":
        await topology.pg.terminate_backends()
    elif kind == "lost_response":
        topology.proxy.lose_next_response(rng.choice(("reset", "stall")))
    elif kind == "stripe_faults":
        fake = topology.fake
        path = "/v1/payment_intents*"
        choice = rng.choice(("500", "429", "drop_after", "decline"))
        if choice == "500":
            fake.fail_requests(500, path=path, times=2)
        elif choice == "429":
            fake.fail_requests(429, path=path, times=2, should_retry=True)
        elif choice == "drop_after":
            fake.drop_connection(after_commit=True, path=path, times=1)
        else:
            fake.program_charge(ChargeOutcome.declined("insufficient_funds"), times=1)
    elif kind == "second_replica":
        if topology.replica_up:
            await _restart(topology.replica, topology, "replica", signal.SIGTERM)
        else:
            topology.replica.start()
            await topology.replica.wait_serving(timeout_s=90)
            topology.replica_up = True
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


def _schedule(options: Options, rng: random.Random) -> list[str]:
    kinds = list(options.faults)
    rng.shuffle(kinds)
    # second_replica first among the shuffled kinds' tail is not needed: it may come at any moment.
    extra = max(0, int(options.duration_s / options.fault_every_s) - len(kinds))
    return kinds + [rng.choice(options.faults) for _ in range(extra)]


async def _faults(
    topology: Topology, options: Options, rng: random.Random, done: Counter[str], deadline: float
) -> None:
    plan = _schedule(options, rng)
    for index, kind in enumerate(plan):
        # Spread over the run, each at a random moment within its slot, all before the last slot ends.
        slot_s = (deadline - time.monotonic()) / max(1, len(plan) - index)
        await asyncio.sleep(max(0.0, rng.uniform(0.2, 0.8) * slot_s))
        if time.monotonic() > deadline - 1.0:
            break
        _say(options, f"fault: {kind}")
        await _inject(kind, topology, rng, options)
        done[kind] += 1


async def _client_loop(
    ctx: ClientContext, workloads: list[Workload], deadline: float, journal: Journal, options: Options
) -> None:
    while time.monotonic() < deadline and journal.requests < options.max_requests:
        workload = ctx.rng.choice(workloads)
        await workload.step(ctx)


@contextlib.asynccontextmanager
async def _clients(topology: Topology) -> AsyncIterator[Callable[[random.Random], AsyncBillingClient]]:
    through_proxy = AsyncBillingClient(f"127.0.0.1:{topology.proxy.port}", timeout_s=3.0, retry=_retry())
    replica = AsyncBillingClient(topology.replica.target, timeout_s=3.0, retry=_retry())

    def pick(rng: random.Random) -> AsyncBillingClient:
        if topology.replica_up and "replica" not in topology.down and rng.random() < 0.4:
            return replica
        return through_proxy

    try:
        yield pick
    finally:
        await through_proxy.close()
        await replica.close()


async def _quiesce_recharges(pg_url: str, topology: Topology, timeout_s: float) -> None:
    """Wait until no recharge attempt is still open, so Stripe's charges and our credits can be compared."""
    topology.fake.clear_faults()
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(pg_url)
    try:
        while time.monotonic() < deadline:
            open_attempts = await conn.fetchval(
                "select count(*) from recharge_attempts where status in ('pending', 'processing')"
            )
            if not open_attempts:
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def run(options: Options) -> Report:
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="billing-chaos-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # the embedded server runs as its own user when we are root
        work = options.work_dir or folder
        work.mkdir(parents=True, exist_ok=True)
        pg = ChaosPostgres(folder)
        _say(options, f"seed {seed}; starting Postgres")
        url = await pg.start()
        fake = FakeStripe()
        await fake.start()
        primary = ServiceProcess(_server_env(url, fake), work / "primary.log")
        replica = ServiceProcess(_server_env(url, fake), work / "replica.log")
        proxy = LossyProxy("127.0.0.1", primary.port)
        topology = Topology(pg, fake, primary, proxy, replica)
        journal = Journal(work / "journal.jsonl")
        journal.open()
        faults: Counter[str] = Counter()
        try:
            await proxy.start()
            primary.start()
            await primary.wait_serving(timeout_s=90)
            async with _clients(topology) as pick:
                setup_client = pick(rng)
                hot, cold = await _setup_wallets(setup_client, options)
                _say(
                    options,
                    f"{len(hot)} hot and {len(cold)} cold wallets; load for {options.duration_s:.0f} s",
                )

                def client_picker(client_rng: random.Random) -> Callable[[], AsyncBillingClient]:
                    return lambda: pick(client_rng)

                def wallet_picker(client_rng: random.Random) -> Callable[[], str]:
                    # Half the load on a few hot wallets (lock contention), half over the cold ones.
                    return lambda: (
                        client_rng.choice(hot) if client_rng.random() < 0.5 else client_rng.choice(cold)
                    )

                workloads = [WORKLOADS[name]() for name in options.workloads]
                contexts = []
                for number in range(options.clients):
                    client_rng = random.Random(rng.randrange(2**32))
                    contexts.append(
                        ClientContext(
                            number,
                            client_rng,
                            journal,
                            client_picker(client_rng),
                            wallet_picker(client_rng),
                        )
                    )
                load_started = time.monotonic()
                deadline = load_started + options.duration_s
                loops = [
                    asyncio.create_task(_client_loop(ctx, workloads, deadline, journal, options))
                    for ctx in contexts
                ]
                fault_task = asyncio.create_task(_faults(topology, options, rng, faults, deadline))
                await asyncio.gather(*loops)
                await fault_task
                load_s = time.monotonic() - load_started
                _say(options, f"load done: {journal.requests:,} requests; checking")
                await primary.wait_serving(timeout_s=90)
                await _quiesce_recharges(url, topology, timeout_s=30)
                conn = await asyncpg.connect(url)
                try:
                    # The checker's replays go straight to the primary: no proxy faults any more.
                    async with AsyncBillingClient(primary.target, timeout_s=30, retry=_retry()) as direct:
                        verdict = await check(journal, conn, direct, fake, replay_limit=options.replay_limit)
                finally:
                    await conn.close()
        finally:
            journal.close()
            for server in (replica, primary):
                if server.proc is not None and server.proc.poll() is None:
                    server.signal(signal.SIGTERM)
                    with contextlib.suppress(AssertionError):
                        await server.wait_exit(timeout_s=30)
                server.kill_quietly()
            await proxy.stop()
            await fake.stop()
            try:
                await asyncio.to_thread(pg.stop)
            except Exception as error:  # never hide the run's own error behind the clean-up's
                print(f"chaos: could not stop the harness's Postgres: {error!r}", file=sys.stderr)
    return Report(faults, verdict, journal.requests, time.monotonic() - started, seed, load_s)


def _parse(argv: list[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 90 s with every fault kind at least once")
    parser.add_argument("--duration-s", type=float, help="seconds of load (default 60)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 12)")
    parser.add_argument("--max-requests", type=int, help="stop the load after this many requests")
    parser.add_argument(
        "--faults", help=f"comma-separated fault kinds (default all: {','.join(FAULT_KINDS)})"
    )
    parser.add_argument("--fault-every-s", type=float, help="about one fault every this many seconds")
    parser.add_argument("--workloads", help=f"comma-separated workloads (default all: {','.join(WORKLOADS)})")
    parser.add_argument("--seed", type=int, help="random seed, to replay a run's choices")
    parser.add_argument("--json", type=Path, help="write the report as JSON to this file")
    parser.add_argument("--work-dir", type=Path, help="keep the servers' logs and the journal here")
    args = parser.parse_args(argv)
    options = QUICK if args.quick else Options()
    overrides: dict[str, Any] = {}
    for name in ("duration_s", "clients", "max_requests", "fault_every_s", "seed", "work_dir"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.faults:
        kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
        overrides["faults"] = kinds
    if args.workloads:
        names = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
        unknown = set(names) - set(WORKLOADS)
        if unknown:
            parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
        overrides["workloads"] = names
    return replace(options, **overrides), args.json


def main(argv: list[str] | None = None) -> int:
    options, json_path = _parse(argv)
    configure_logging("console", "warning")
    report = asyncio.run(run(options))
    print(report.table())
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
