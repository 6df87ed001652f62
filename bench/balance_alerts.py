"""Balance alerts: the time from a crossing debit to its `balance_alert` on a WatchWalletEvents stream,
and what thresholds cost RecordUsage, timed over the RPC against a real server.

    python3 dev.py run python bench/balance_alerts.py              # embedded Postgres in a temp folder
    BILLING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python3 dev.py run python bench/balance_alerts.py          # a throwaway database on that server

Against a `consofta-billing serve` process, with one company's event stream open, it repeats: a debit
that crosses a threshold (RecordUsage), then a credit that lifts the balance back over it (which
resolves the alert). For each crossing it notes when the RecordUsage call was sent, when its reply (sent
after the commit) arrived, and when the `balance_alert` arrived on the stream. Beside it, in the same
run: RecordUsage on a company without thresholds and on one with 5 that it does not cross (the hot-path
cost of the trigger), and health Check as the baseline of an RPC doing no work.
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
import uuid
from pathlib import Path

import grpc
from consofta.billing.v1 import (
    settings_service_pb2,
    settings_service_pb2_grpc,
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.servers import scratch_database, served
from service.api.wire.money import money
from service.domain.money import usd

UNIT = usd(1, 350_000_000)  # 2,000 emails


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   n={len(ordered)}"


async def new_company(wallet: wallet_service_pb2_grpc.WalletServiceAsyncStub, funds_nanos: int) -> str:
    company = f"bench-{uuid.uuid4().hex[:10]}"
    await wallet.CreateWallet(
        wallet_service_pb2.CreateWalletRequest(company_id=company, display_name=company, request_id=company)
    )
    await wallet.CreditWallet(
        wallet_service_pb2.CreditWalletRequest(
            company_id=company, amount=money(funds_nanos), reason="bench", request_id=f"fund-{company}"
        )
    )
    return company


async def set_thresholds(
    settings: settings_service_pb2_grpc.SettingsServiceAsyncStub, company: str, *amounts: int
) -> None:
    await settings.UpdateBillingSettings(
        settings_service_pb2.UpdateBillingSettingsRequest(
            company_id=company,
            request_id=f"alerts-{company}",
            settings=settings_service_pb2.BillingSettings(
                balance_alert_thresholds=[money(a) for a in amounts]
            ),
            update_mask=FieldMask(paths=["balance_alert_thresholds"]),
        )
    )


def emails(company: str, key: str, count: int) -> usage_service_pb2.RecordUsageRequest:
    return usage_service_pb2.RecordUsageRequest(
        company_id=company,
        idempotency_key=key,
        usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=count)),
    )


async def bench(target: str, crossings: int, calls: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        wallet = wallet_service_pb2_grpc.WalletServiceStub(channel)
        usage = usage_service_pb2_grpc.UsageServiceStub(channel)
        settings = settings_service_pb2_grpc.SettingsServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        checks = []
        for _ in range(calls):
            started = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest())
            checks.append(time.perf_counter() - started)

        plain, armed = await new_company(wallet, usd(10_000)), await new_company(wallet, usd(10_000))
        await set_thresholds(settings, armed, usd(1), usd(2), usd(3), usd(4), usd(5))
        cost: dict[str, list[float]] = {plain: [], armed: []}
        for i in range(calls):
            for company in (plain, armed):  # interleaved, so both see the same load
                started = time.perf_counter()
                await usage.RecordUsage(emails(company, f"u-{i}", 1))
                cost[company].append(time.perf_counter() - started)

        company = await new_company(wallet, 3 * UNIT)
        await set_thresholds(settings, company, 2 * UNIT)
        stream = wallet.WatchWalletEvents(wallet_service_pb2.WatchWalletEventsRequest(company_id=company))
        arrivals: asyncio.Queue[tuple[float, int]] = asyncio.Queue()

        async def read() -> None:
            async for reply in stream:
                if reply.event.type == "balance_alert":
                    arrivals.put_nowait(
                        (time.perf_counter(), json.loads(reply.event.payload_json)["ledger_sequence"])
                    )

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.5)  # the stream is open and caught up
        after_reply, after_send = [], []
        for i in range(crossings):
            sent = time.perf_counter()
            reply = await usage.RecordUsage(emails(company, f"cross-{i}", 2000 * 2))  # 3 -> 1 units
            replied = time.perf_counter()
            arrived, sequence = await asyncio.wait_for(arrivals.get(), 10)
            assert sequence == reply.usage_record.ledger_sequence
            after_reply.append(arrived - replied)
            after_send.append(arrived - sent)
            await wallet.CreditWallet(
                wallet_service_pb2.CreditWalletRequest(
                    company_id=company, amount=money(2 * UNIT), reason="bench", request_id=f"up-{company}-{i}"
                )
            )
        reader.cancel()
        stream.cancel()

    print(f"health Check (baseline)                          {ms(checks)}")
    print(f"RecordUsage, no thresholds                       {ms(cost[plain])}")
    print(f"RecordUsage, 5 thresholds not crossed            {ms(cost[armed])}")
    ratio = statistics.median(cost[armed]) / statistics.median(cost[plain])
    print(f"  ratio of medians (5 thresholds / none)         {ratio:.3f}")
    print(f"crossing debit: send -> balance_alert received   {ms(after_send)}")
    print(f"crossing debit: reply -> balance_alert received  {ms(after_reply)}  (negative: before the reply)")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crossings", type=int, default=200)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        async with scratch_database(Path(tmp)) as database_url:
            async with served(database_url, workers=1, log_dir=Path(tmp)) as target:
                await bench(target, args.crossings, args.calls)


if __name__ == "__main__":
    asyncio.run(main())
