"""`consofta-billing worker` as a real subprocess, pointed at a test database and the fake Stripe."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.fake_stripe import DEFAULT_WEBHOOK_SECRET, FakeStripe
from tests.support.process import ENTRY_POINT


class Worker:
    def __init__(self, db_url: str, fake: FakeStripe, log_path: Path, **extra_env: str) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "BILLING_PAYMENT_PROVIDER": "stripe",
            "BILLING_STRIPE_SECRET_KEY": fake.api_key,
            "BILLING_STRIPE_WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
            "BILLING_STRIPE_API_BASE": fake.url,
            "BILLING_RECHARGE_SWEEP_INTERVAL_S": "0.5",
            "BILLING_RECHARGE_LEASE_S": "1.5",
            "BILLING_RECHARGE_UNKNOWN_RETRY_BACKOFF_S": "0.1,0.2",
            "BILLING_DB_POOL_MIN_SIZE": "1",
            "BILLING_DB_POOL_MAX_SIZE": "6",
            "BILLING_LOG_FORMAT": "json",
            "BILLING_SHUTDOWN_GRACE_S": "2",
            **extra_env,
        }
        self.env.pop("BILLING_TEST_CRASH_AT", None) if "BILLING_TEST_CRASH_AT" not in extra_env else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([ENTRY_POINT, "worker"], env=self.env, stdout=log, stderr=log)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_exit(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker still running after {timeout_s}s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when the machine dies."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> int:
        if not self.running:
            assert self.proc is not None
            return self.proc.returncode
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
