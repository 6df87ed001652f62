"""`serve --workers N` as an operator runs it: one port, N processes, a parent that restarts and stops
them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from consofta.billing.v1 import (
    usage_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)

from tests.e2e.test_reflection_grpcurl import GRPCURL, _grpcurl
from tests.support.process import ServiceProcess

pytestmark = pytest.mark.slow

EMAIL_NANOS = 675_000


def _is_live_worker(process: psutil.Process) -> bool:
    # A killed worker stays a zombie child until the parent reaps it; only running workers count.
    try:
        return process.status() != psutil.STATUS_ZOMBIE and "service.worker_process" in process.cmdline()
    except psutil.Error:  # gone between listing and looking
        return False


def _workers_of(parent: ServiceProcess) -> list[psutil.Process]:
    assert parent.proc is not None
    children = psutil.Process(parent.proc.pid).children()
    return sorted((p for p in children if _is_live_worker(p)), key=lambda p: p.pid)


async def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _rpc_lines_per_worker(log: Path) -> Counter[int]:
    per_worker: Counter[int] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"event": "rpc"' in line:
            per_worker[json.loads(line).get("worker")] += 1
    return per_worker


async def _record_until_ok(channels: list[grpc.aio.Channel], company: str, n: int) -> int:
    """One usage under key n, retried with the same key (on any channel) while a worker is down."""
    for attempt in range(200):
        stub = usage_service_pb2_grpc.UsageServiceStub(channels[(n + attempt) % len(channels)])
        try:
            await stub.RecordUsage(
                usage_service_pb2.RecordUsageRequest(
                    company_id=company,
                    idempotency_key=f"key-{n}",
                    usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1)),
                ),
                timeout=10,
            )
            return attempt
        except grpc.aio.AioRpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
            await asyncio.sleep(0.05)
    raise AssertionError(f"key-{n} never succeeded")


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A folder the embedded server's user can reach when tests run as root (see test_process_lifecycle)."""
    with tempfile.TemporaryDirectory(prefix="billing-workers-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


async def test_two_workers_share_the_port_survive_a_kill_and_stop_cleanly(pg_home: Path) -> None:
    pgdata = pg_home / "pgdata"
    env = {
        "BILLING_PGDATA": str(pgdata),  # no DATABASE_URL: the parent starts the embedded Postgres, once
        "BILLING_DB_POOL_MIN_SIZE": "1",
        "BILLING_DB_POOL_MAX_SIZE": "4",
        "BILLING_SHUTDOWN_GRACE_S": "2",
    }
    log = pg_home / "service.log"
    server = ServiceProcess(env, log, args=("serve", "--workers", "2"))
    server.env["BILLING_METRICS_PORT"] = "0"  # a free port per worker
    everything: list[psutil.Process] = []
    try:
        server.start()
        await server.wait_serving()
        await server.wait_all_workers(2)
        assert server.proc is not None
        parent = psutil.Process(server.proc.pid)
        first = _workers_of(server)
        assert len(first) == 2
        # One embedded Postgres for the whole service, started by the parent: the workers are handed
        # its URL, so none starts one of its own.
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().splitlines()[0]))
        everything = [parent, *first, postmaster]
        assert all("host=" in w.environ().get("DATABASE_URL", "") for w in first)
        assert log.read_text().count("starting embedded postgres") == 1

        if GRPCURL is not None:
            reply = await _grpcurl("-plaintext", server.target, "grpc.health.v1.Health/Check")
            assert json.loads(reply) == {"status": "SERVING"}

        company = f"co-{uuid.uuid4().hex[:8]}"
        # Each channel its own TCP connection (gRPC shares connections between a process's channels
        # unless told not to); the kernel hands each connection to one of the workers.
        channels = [
            grpc.aio.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(16)
        ]
        try:
            await wallet_service_pb2_grpc.WalletServiceStub(channels[0]).CreateWallet(
                wallet_service_pb2.CreateWalletRequest(
                    company_id=company, display_name=company, request_id=company
                )
            )
            await asyncio.gather(*(_record_until_ok(channels, company, n) for n in range(100)))
            served = _rpc_lines_per_worker(log)
            assert served[0] > 0 and served[1] > 0, served  # both workers took calls on the one port

            # SIGKILL one worker in the middle of a load; the calls keep going to the other, and the
            # parent starts a new worker in its place.
            victim = first[0]
            load = asyncio.gather(*(_record_until_ok(channels, company, n) for n in range(100, 400)))
            await asyncio.sleep(0.2)
            victim.kill()
            await load
            before = {victim.pid, first[1].pid}
            fresh: list[psutil.Process] = []

            def replaced() -> bool:
                # One listing per look, so the replacement found is the one the condition saw.
                now = _workers_of(server)
                fresh[:] = [w for w in now if w.pid not in before]
                return len(now) == 2 and victim.pid not in {w.pid for w in now} and len(fresh) == 1

            await _wait_for(replaced, timeout_s=60, what="a new worker in place of the killed one")
            replacement = fresh[0]
            everything.append(replacement)
            await server.wait_all_workers(2)
            # Only the killed one: a replacement that failed to start would be restarted again.
            assert log.read_text().count("worker exited; restarting") == 1, log.read_text()[-4000:]

            async with grpc.aio.insecure_channel(server.target) as channel:
                wallet = await wallet_service_pb2_grpc.WalletServiceStub(channel).GetWallet(
                    wallet_service_pb2.GetWalletRequest(company_id=company)
                )
            # Every key debited once, whatever worker died under it.
            assert wallet.wallet.balance.nanos + wallet.wallet.balance.units * 10**9 == -400 * EMAIL_NANOS
        finally:
            for channel in channels:
                await channel.close()

        server.signal(signal.SIGTERM)
        assert await server.wait_exit(timeout_s=30) == 0
        # Nothing left running: the parent, its workers, the embedded Postgres.
        await _wait_for(
            lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in everything),
            timeout_s=10,
            what="every process of the service to exit",
        )
        assert "stopping workers" in log.read_text()
    finally:
        server.kill_quietly()
        for process in everything:
            if process.is_running():
                process.kill()


async def test_workers_exit_by_themselves_when_the_parent_is_killed(db_url: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": db_url,
        "BILLING_PAYMENT_PROVIDER": "sandbox",
        "BILLING_ALLOW_SANDBOX": "1",
        "BILLING_DB_POOL_MIN_SIZE": "1",
        "BILLING_DB_POOL_MAX_SIZE": "2",
    }
    server = ServiceProcess(env, tmp_path / "service.log", args=("serve", "--workers", "2"))
    server.env["BILLING_METRICS_PORT"] = "off"
    workers: list[psutil.Process] = []
    try:
        server.start()
        await server.wait_serving()
        workers = _workers_of(server)
        assert len(workers) == 2
        server.signal(signal.SIGKILL)
        await server.wait_exit()
        await _wait_for(
            lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
            timeout_s=30,
            what="the orphaned workers to exit",
        )
        assert "supervisor gone; shutting down" in (tmp_path / "service.log").read_text()
    finally:
        server.kill_quietly()
        for worker in workers:
            if worker.is_running():
                worker.kill()


async def test_pools_that_cannot_fit_max_connections_stop_the_start_with_a_clear_error(
    db_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": db_url,
        "BILLING_PAYMENT_PROVIDER": "sandbox",
        "BILLING_ALLOW_SANDBOX": "1",
        "BILLING_DB_POOL_MIN_SIZE": "1",
        "BILLING_DB_POOL_MAX_SIZE": "200",
    }
    log = tmp_path / "service.log"
    server = ServiceProcess(env, log, args=("serve", "--workers", "3"))
    try:
        server.start()
        assert await server.wait_exit(timeout_s=60) == 2
    finally:
        server.kill_quietly()
    text = log.read_text()
    assert "configuration error: 3 server process(es) (BILLING_GRPC_WORKERS) x 203 connections" in text
    assert "= 609 connections, but the database allows" in text
    assert "worker started" not in text  # checked before any worker exists


async def test_each_worker_traces_its_calls_when_tracing_is_asked_for(db_url: str, tmp_path: Path) -> None:
    """`serve --workers N` starts tracing in every worker, as `serve` does alone (the console exporter
    writes each span as JSON to the log when the worker stops)."""
    env = {
        "DATABASE_URL": db_url,
        "BILLING_PAYMENT_PROVIDER": "sandbox",
        "BILLING_ALLOW_SANDBOX": "1",
        "BILLING_DB_POOL_MIN_SIZE": "1",
        "BILLING_DB_POOL_MAX_SIZE": "2",
        "OTEL_TRACES_EXPORTER": "console",
    }
    log = tmp_path / "service.log"
    server = ServiceProcess(env, log, args=("serve", "--workers", "2"))
    server.env["BILLING_METRICS_PORT"] = "off"
    try:
        server.start()
        await server.wait_serving()
        await server.wait_all_workers(2)
        channels = [
            grpc.aio.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(8)
        ]
        try:
            for channel in channels:
                with pytest.raises(grpc.aio.AioRpcError):
                    await wallet_service_pb2_grpc.WalletServiceStub(channel).GetWallet(
                        wallet_service_pb2.GetWalletRequest(company_id="nobody")
                    )
        finally:
            for channel in channels:
                await channel.close()
        server.signal(signal.SIGTERM)
        assert await server.wait_exit(timeout_s=60) == 0
    finally:
        server.kill_quietly()
    text = log.read_text()
    assert text.count('"name": "/consofta.billing.v1.WalletService/GetWallet"') == len(channels), text[-3000:]
