"""`consofta-billing worker`: the recharge loop alone, without gRPC (scale it apart from the API).

Webhooks are served by `serve` processes (they need a stable public port); workers only charge.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from service.config import Config
from service.db.pool import create_pool
from service.payments.factory import make_provider

from .loop import LoopSettings, RechargeLoop

log = structlog.get_logger(__name__)


async def run_worker(config: Config) -> None:
    """Run the recharge loop until SIGTERM or Ctrl-C, then stop taking work and exit."""
    from service.db.startup import apply_migrations, open_database

    database_url, embedded = await open_database(config)
    try:
        await apply_migrations(database_url)
        pool = await create_pool(
            database_url,
            min_size=config.db_pool_min_size,
            max_size=config.db_pool_max_size,
            statement_timeout_s=config.db_statement_timeout_s,
        )
        provider = make_provider(config)
        loop = RechargeLoop(pool, provider, database_url, LoopSettings.from_config(config))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await loop.start()
        log.info("worker running", owner=loop.owner)
        try:
            await stop.wait()
        finally:
            await loop.stop(grace_s=config.shutdown_grace_s)
            await provider.aclose()
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    log.info("worker stopped")
