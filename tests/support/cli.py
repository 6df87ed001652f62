"""Running `consofta-billing` as an operator runs it: a real subprocess, with its exit code and output."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from tests.support.process import ENTRY_POINT


@dataclass
class Result:
    code: int
    out: str
    err: str


async def run(*args: str, database_url: str | None = None, **env: str) -> Result:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DATABASE_URL"))}
    full_env.update(env, BILLING_LOG_FORMAT="json")
    if database_url is not None:
        full_env["DATABASE_URL"] = database_url
        # A test database: the sandbox is allowed on it (the provider must be chosen with DATABASE_URL).
        full_env.setdefault("BILLING_PAYMENT_PROVIDER", "sandbox")
        full_env.setdefault("BILLING_ALLOW_SANDBOX", "1")
    proc = await asyncio.create_subprocess_exec(
        ENTRY_POINT, *args, env=full_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())
