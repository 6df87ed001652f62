"""The connection budget: what this host's processes may open must fit the database's max_connections.

Each server process holds its pool (at most BILLING_DB_POOL_MAX_SIZE connections) and a few connections
of its own beside it. Checked once at start, against the server's own settings, so that a pool size or a
worker count that cannot fit fails with a clear message instead of "too many clients" under load.
Connections of other hosts and tools are not known here and not counted.
"""

from __future__ import annotations

import asyncpg

from service.config import Config, ConfigError

# Beside the pool, each server process keeps: the event streams' LISTEN connection, the recharge loop's
# LISTEN connection, the webhook deliverer's (when outbound webhooks are on), and the metrics scrape's
# connection (when metrics are on).
LISTENERS_PER_PROCESS = 2


def connections_per_process(config: Config) -> int:
    deliverer = 1 if config.webhook_allowed_hosts.enabled else 0
    metrics = 0 if config.metrics_port is None else 1
    return config.db_pool_max_size + LISTENERS_PER_PROCESS + deliverer + metrics


async def usable_connections(conn: asyncpg.Connection) -> tuple[int, int]:
    """(max_connections, the slots left to ordinary roles: max_connections minus the reserved ones)."""
    row = await conn.fetchrow(
        """
        select current_setting('max_connections')::int as max_connections,
               current_setting('superuser_reserved_connections')::int
               + coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int as reserved
        """
    )
    assert row is not None
    return int(row["max_connections"]), int(row["max_connections"]) - int(row["reserved"])


async def check_connection_budget(database_url: str, config: Config, processes: int) -> int:
    """Raise ConfigError when `processes` server processes could open more connections than allowed.

    Returns the number of connections they may open at most.
    """
    per_process = connections_per_process(config)
    needed = processes * per_process
    conn = await asyncpg.connect(database_url)
    try:
        max_connections, usable = await usable_connections(conn)
    finally:
        await conn.close()
    if needed >= usable:
        raise ConfigError(
            f"{processes} server process(es) (BILLING_GRPC_WORKERS) x {per_process} connections "
            f"(BILLING_DB_POOL_MAX_SIZE={config.db_pool_max_size} + {per_process - config.db_pool_max_size} "
            f"of its own) = {needed} connections, but the database allows {usable} "
            f"(max_connections={max_connections} minus reserved slots): lower BILLING_DB_POOL_MAX_SIZE "
            "or BILLING_GRPC_WORKERS, or raise max_connections"
        )
    return needed
