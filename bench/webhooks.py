"""Outbound webhooks: the time from a crossing debit's commit to its `balance_alert` webhook arriving at
a receiver, against a real server process, with the health Check as the baseline in the same run.

    python3 dev.py run python bench/webhooks.py                    # embedded Postgres in a temp folder
    BILLING_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python3 dev.py run python bench/webhooks.py --json out.json

A receiver listens on 127.0.0.1 (port 0) in this process; the server (`consofta-billing serve`, its own
process, BILLING_WEBHOOK_ALLOWED_HOSTS=127.0.0.1) has one endpoint registered for `balance_alert`. Each
round: a debit that crosses the company's threshold (RecordUsage; its reply is sent after the commit),
then a credit that lifts the balance back. For each crossing it notes when the reply arrived and when
the webhook naming that ledger entry arrived (its signature checked), and, beside it, when the same
alert arrived on a WatchWalletEvents stream.
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
from typing import Any

import grpc
from aiohttp import web
from consofta.billing.v1 import (
    settings_service_pb2_grpc,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.balance_alerts import UNIT, emails, new_company, set_thresholds
from bench.servers import scratch_database, served
from service.api.wire.money import money
from service.webhooks.signing import verify


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000, "n": len(ordered)}


class Receiver:
    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[tuple[float, bytes, str]] = asyncio.Queue()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.read()
        self.arrivals.put_nowait((arrived, body, request.headers.get("Consofta-Signature", "")))
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def bench(target: str, crossings: int, calls: int) -> dict[str, Any]:
    receiver = Receiver()
    await receiver.start()
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            wallet = wallet_service_pb2_grpc.WalletServiceStub(channel)
            usage = usage_service_pb2_grpc.UsageServiceStub(channel)
            settings = settings_service_pb2_grpc.SettingsServiceStub(channel)
            hooks = webhook_service_pb2_grpc.WebhookServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            checks = []
            for _ in range(calls):
                started = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest())
                checks.append(time.perf_counter() - started)

            created = await hooks.CreateWebhookEndpoint(
                webhook_service_pb2.CreateWebhookEndpointRequest(
                    url=f"http://127.0.0.1:{receiver.port}/hook",
                    event_types=["balance_alert"],
                    request_id=f"bench-{uuid.uuid4().hex}",
                )
            )
            secret = created.signing_secret
            company = await new_company(wallet, 3 * UNIT)
            await set_thresholds(settings, company, 2 * UNIT)
            stream = wallet.WatchWalletEvents(wallet_service_pb2.WatchWalletEventsRequest(company_id=company))
            streamed: asyncio.Queue[tuple[float, int]] = asyncio.Queue()

            async def read() -> None:
                async for reply in stream:
                    if reply.event.type == "balance_alert":
                        sequence = json.loads(reply.event.payload_json)["ledger_sequence"]
                        streamed.put_nowait((time.perf_counter(), sequence))

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.5)
            to_webhook, to_stream, bad_signatures = [], [], 0
            for i in range(crossings):
                reply = await usage.RecordUsage(emails(company, f"cross-{i}", 2000 * 2))
                replied = time.perf_counter()
                arrived, body, header = await asyncio.wait_for(receiver.arrivals.get(), 30)
                event = json.loads(body)
                assert event["data"]["ledger_sequence"] == reply.usage_record.ledger_sequence, event
                bad_signatures += not verify(header, body, secret)
                to_webhook.append(arrived - replied)
                on_stream, sequence = await asyncio.wait_for(streamed.get(), 30)
                assert sequence == reply.usage_record.ledger_sequence
                to_stream.append(on_stream - replied)
                await wallet.CreditWallet(
                    wallet_service_pb2.CreditWalletRequest(
                        company_id=company, amount=money(2 * UNIT), reason="bench", request_id=f"up-{i}"
                    )
                )
            reader.cancel()
            stream.cancel()
    finally:
        await receiver.stop()
    check, webhook = stats(checks), stats(to_webhook)
    return {
        "health_check": check,
        "commit_to_webhook": webhook,
        "commit_to_stream": stats(to_stream),
        "bad_signatures": bad_signatures,
        "ratio_webhook_p50_to_check_p50": webhook["p50_ms"] / check["p50_ms"],
    }


def report(result: dict[str, Any]) -> None:
    for name, label in (
        ("health_check", "health Check (baseline)"),
        ("commit_to_webhook", "debit reply -> balance_alert webhook received"),
        ("commit_to_stream", "debit reply -> balance_alert on WatchWalletEvents"),
    ):
        s = result[name]
        print(f"{label:52} p50 {s['p50_ms']:8.2f} ms   p99 {s['p99_ms']:8.2f} ms   n={s['n']}")
    print(f"{'ratio of p50s (webhook / health Check)':52} {result['ratio_webhook_p50_to_check_p50']:.1f}")
    print(f"{'deliveries whose signature failed to verify':52} {result['bad_signatures']}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crossings", type=int, default=200)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        env = {"BILLING_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
        async with scratch_database(Path(tmp)) as database_url:
            async with served(database_url, workers=1, log_dir=Path(tmp), env=env) as target:
                result = await bench(target, args.crossings, args.calls)
    report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
