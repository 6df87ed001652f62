"""`consofta-billing serve` as a real process with its embedded Postgres: start, stop, crash, restart."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from consofta.billing.v1 import wallet_service_pb2, wallet_service_pb2_grpc

from tests.support.process import ServiceProcess

pytestmark = pytest.mark.slow


def _postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().splitlines()[0])
    return pid if psutil.pid_exists(pid) else None


async def _create(target: str, company: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await wallet_service_pb2_grpc.WalletServiceStub(channel).CreateWallet(
            wallet_service_pb2.CreateWalletRequest(
                company_id=company, display_name=company, request_id=company
            )
        )


async def _exists(target: str, company: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await wallet_service_pb2_grpc.WalletServiceStub(channel).GetWallet(
            wallet_service_pb2.GetWalletRequest(company_id=company)
        )
        return reply.wallet.company_id == company


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A folder the embedded server's own user can reach when the tests run as root. Not tmp_path: every
    pytest session resets /tmp/pytest-of-<user> to mode 0700, which locks that user out mid-test."""
    with tempfile.TemporaryDirectory(prefix="billing-lifecycle-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


async def test_embedded_postgres_survives_stop_crash_and_restart(pg_home: Path) -> None:
    tmp_path = pg_home
    pgdata = tmp_path / "pgdata"
    env = {"BILLING_PGDATA": str(pgdata)}
    log = tmp_path / "service.log"

    first = ServiceProcess(env, log)
    try:
        first.start()
        await first.wait_serving()
        await _create(first.target, "acme")
        assert _postmaster_pid(pgdata) is not None
        first.signal(signal.SIGTERM)
        assert await first.wait_exit() == 0
        assert _postmaster_pid(pgdata) is None, "SIGTERM must stop the embedded Postgres"

        # A crash of the service alone: Postgres is left running and is adopted by the next start.
        second = ServiceProcess(env, log)
        second.start()
        await second.wait_serving()
        assert await _exists(second.target, "acme")
        second.signal(signal.SIGKILL)
        await second.wait_exit()
        orphan = _postmaster_pid(pgdata)
        assert orphan is not None

        # A crash of both: a stale postmaster.pid is left behind, and the next start still comes up.
        psutil.Process(orphan).kill()
        psutil.Process(orphan).wait(10)
        third = ServiceProcess(env, log)
        third.start()
        await third.wait_serving()
        assert await _exists(third.target, "acme")
        third.signal(signal.SIGINT)  # Ctrl-C
        assert await third.wait_exit() == 0
        assert _postmaster_pid(pgdata) is None
    finally:
        for proc in (first, locals().get("second"), locals().get("third")):
            if isinstance(proc, ServiceProcess):
                proc.kill_quietly()
        leftover = _postmaster_pid(pgdata)
        if leftover is not None:
            psutil.Process(leftover).kill()
