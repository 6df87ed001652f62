"""Start-up never touches a Postgres it did not start, and every start-up failure is one line naming
the setting, exit code 2, with nothing left running."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from consofta.billing.v1 import wallet_service_pb2, wallet_service_pb2_grpc

from tests.support.process import ServiceProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def home() -> Iterator[Path]:
    """A folder the embedded server's own user can reach when the tests run as root."""
    with tempfile.TemporaryDirectory(prefix="billing-startup-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def _postmaster(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().splitlines()[0])
    return pid if psutil.pid_exists(pid) else None


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "nothing was written"
    assert not any("Traceback" in line for line in lines), log.read_text()
    return lines[-1]


async def test_a_second_serve_on_the_same_data_folder_is_refused_and_the_first_keeps_serving(
    home: Path,
) -> None:
    pgdata = home / "pgdata"
    env = {"BILLING_PGDATA": str(pgdata)}
    first = ServiceProcess(env, home / "first.log")
    second = ServiceProcess(env, home / "second.log")
    try:
        first.start()
        await first.wait_serving()
        postmaster = _postmaster(pgdata)
        assert postmaster is not None
        second.start()
        assert await second.wait_exit() == 2
        line = _last_line(home / "second.log")
        assert line.startswith("consofta-billing: BILLING_PGDATA ") and "in use by another" in line, line
        # The first server's Postgres is untouched, and the first server still answers from it.
        assert _postmaster(pgdata) == postmaster
        await first.wait_serving(timeout_s=5)
        async with grpc.aio.insecure_channel(first.target) as channel:
            wallets = wallet_service_pb2_grpc.WalletServiceStub(channel)
            await wallets.CreateWallet(
                wallet_service_pb2.CreateWalletRequest(company_id="acme", display_name="Acme", request_id="c")
            )
            reply = await wallets.GetWallet(wallet_service_pb2.GetWalletRequest(company_id="acme"))
            assert reply.wallet.company_id == "acme"
        first.signal(signal.SIGTERM)
        assert await first.wait_exit() == 0
        assert _postmaster(pgdata) is None
    finally:
        for proc in (first, second):
            proc.kill_quietly()
        leftover = _postmaster(pgdata)
        if leftover is not None:
            psutil.Process(leftover).kill()


@pytest.mark.parametrize("setting", ["BILLING_GRPC_PORT", "BILLING_METRICS_PORT"])
async def test_a_taken_port_fails_at_once_naming_its_setting_and_starts_nothing(
    home: Path, setting: str
) -> None:
    pgdata = home / "pgdata"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = ServiceProcess({"BILLING_PGDATA": str(pgdata)}, home / "service.log")
        service.env[setting] = str(port)
        try:
            service.start()
            assert await service.wait_exit() == 2
        finally:
            service.kill_quietly()
    line = _last_line(home / "service.log")
    assert line.startswith(f"consofta-billing: {setting}: cannot listen on 127.0.0.1:{port}"), line
    # Checked before anything was started: no embedded Postgres, not even a data folder.
    assert not pgdata.exists()


async def test_a_database_that_cannot_be_reached_at_start_names_database_url(home: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        service = ServiceProcess(
            {
                "DATABASE_URL": f"postgresql://billing:s3cret@127.0.0.1:{port}/billing",
                "BILLING_PAYMENT_PROVIDER": "sandbox",
                "BILLING_ALLOW_SANDBOX": "1",
            },
            home / "service.log",
        )
        try:
            service.start()
            assert await service.wait_exit() == 2
        finally:
            service.kill_quietly()
    line = _last_line(home / "service.log")
    assert line.startswith("consofta-billing: DATABASE_URL: cannot reach the database"), line
    assert "s3cret" not in (home / "service.log").read_text()
