"""`serve --workers N`: N server processes on one gRPC port, supervised by this parent process.

A grpc.aio server runs Python on one core; N processes use N. How they fit together:

* **One port.** Every worker binds the same gRPC port (and webhook port) with SO_REUSEPORT (gRPC's
  `grpc.so_reuseport`, aiohttp's `reuse_port`), and the kernel spreads incoming connections over the
  workers that listen. A dead worker's socket is gone, so no new connection lands on it. When a port is
  0, the parent picks it by binding a socket with SO_REUSEPORT (never listening on it) and holds it for
  its lifetime, so a restarted worker gets the same port back.
* **Each worker is a whole server** (`start_server`): its own event loop, pool, health probe, metrics
  server and recharge loop. Health is per worker: the worker a Check lands on answers SERVING only while
  it serves and its database answers; when the service drains, every worker answers NOT_SERVING.
* **Metrics: one port per worker.** Worker i serves /metrics on BILLING_METRICS_PORT + i (each picks a
  free port when it is 0; `off` stays off), so every scrape target is one process with exact counters
  and live pool gauges, and no multiprocess files outlive a crashed worker. Add the N targets to
  Prometheus; `sum()` the counters, `max()` the database-wide gauge.
* **The recharge loop runs once per worker.** It is built for many processes (SKIP LOCKED claims,
  leases, one in-flight attempt per wallet, unique credits), so N loops are as safe as one; and no
  single process is special, so a crashed worker stops no recharge. The cost, N LISTEN connections
  and N sweeps per interval, is counted in the connection budget.
* **The database.** The parent starts the embedded Postgres (when no DATABASE_URL is set), applies
  the migrations, checks that N workers' connections fit max_connections, and hands the URL to the
  workers; it stops the embedded Postgres after the last worker has exited.
* **Supervision.** A worker that exits on its own is restarted after a backoff (0.5 s doubling to 30 s,
  back to 0.5 s once it has run for a minute). A worker that fails before the first start completed
  stops the whole service (a bad port or setting would fail the same way again). SIGTERM or Ctrl-C is
  passed to every worker, each drains within BILLING_SHUTDOWN_GRACE_S, and any still running well after
  that is killed. Each worker holds one end of a socket pair with the parent: when the parent dies,
  even by SIGKILL, the workers see it close and shut down, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import structlog

from service.config import Config, ConfigError
from service.db.budget import check_connection_budget
from service.db.startup import apply_migrations, open_database
from service.payments.factory import check_provider_choice
from service.worker_process import RESTART_BACKOFF_INITIAL_S, Worker

log = structlog.get_logger(__name__)

RESTART_BACKOFF_MAX_S = 30.0
# A worker that ran this long is healthy again: its next crash restarts it after the initial backoff.
STABLE_AFTER_S = 60.0
# How long a worker may take from spawn to serving (migrations are already applied by then).
START_TIMEOUT_S = 120.0
# Beyond the grace period, what a worker may take to close its pool and loops before it is killed.
STOP_MARGIN_S = 15.0


def metrics_ports(config: Config, workers: int) -> list[int | None]:
    """Worker i's metrics port: BILLING_METRICS_PORT + i; 0 (a free one each) and off stay as they are."""
    base = config.metrics_port
    if base is None or base == 0:
        return [base] * workers
    ports = [base + i for i in range(workers)]
    if ports[-1] > 65535:
        raise ConfigError(f"BILLING_METRICS_PORT={base} + {workers} workers goes past port 65535")
    others = (("BILLING_GRPC_PORT", config.grpc_port), ("BILLING_WEBHOOK_PORT", config.webhook_port))
    for name, port in others:
        if port and port in ports:
            raise ConfigError(
                f"{name}={port} is inside the workers' metrics ports "
                f"(BILLING_METRICS_PORT={base} to {ports[-1]}, one per worker)"
            )
    spread: list[int | None] = [*ports]
    return spread


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never-listening SO_REUSEPORT socket on host:port; port 0 picks a free one.

    It keeps the port for the workers: they bind it too (with SO_REUSEPORT), and only listening sockets
    receive connections. Binding also fails early, with the port named, when another program (without
    SO_REUSEPORT) already holds it.
    """
    infos = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {error.strerror}") from None
    return sock


class WorkerStartError(Exception):
    """A worker exited or hung before it served for the first time: the service does not start."""


class Supervisor:
    def __init__(self, config: Config, workers: int, database_url: str) -> None:
        self.config = config
        self.count = workers
        self.database_url = database_url
        self.workers: list[Worker] = []
        self.stopping = asyncio.Event()
        self._reserved: list[socket.socket] = []

    def _worker_env(self, grpc_port: int, webhook_port: int, metrics_port: int | None) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "BILLING_GRPC_WORKERS": "1",
            "BILLING_GRPC_PORT": str(grpc_port),
            "BILLING_WEBHOOK_PORT": str(webhook_port),
            "BILLING_METRICS_PORT": "off" if metrics_port is None else str(metrics_port),
            # The parent's own choice, already checked. The workers get the database's URL even when
            # it is the parent's embedded one, so the sandbox that implies is allowed explicitly.
            "BILLING_PAYMENT_PROVIDER": self.config.payment_provider,
            **(
                {"BILLING_ALLOW_SANDBOX": "1"}
                if self.config.database_url is None and self.config.payment_provider == "sandbox"
                else {}
            ),
            # gRPC's fork handlers are for os.fork() without exec; the workers are spawned fresh.
            "GRPC_ENABLE_FORK_SUPPORT": "false",
        }

    def prepare(self) -> int:
        """Reserve the shared ports and build each worker's environment; returns the gRPC port."""
        config = self.config
        per_worker_metrics = metrics_ports(config, self.count)
        grpc_socket = reserve_port(config.grpc_host, config.grpc_port)
        self._reserved.append(grpc_socket)
        grpc_port = int(grpc_socket.getsockname()[1])
        webhook_port = config.webhook_port
        if config.stripe_webhook_secret:
            webhook_socket = reserve_port(config.webhook_host, config.webhook_port)
            self._reserved.append(webhook_socket)
            webhook_port = int(webhook_socket.getsockname()[1])
        self.workers = [
            Worker(i, self._worker_env(grpc_port, webhook_port, port))
            for i, port in enumerate(per_worker_metrics)
        ]
        return grpc_port

    async def _start_first(self, worker: Worker) -> None:
        """Spawn a worker and wait until it serves; raise if it exits or hangs before."""
        await worker.spawn()
        assert worker.proc is not None
        exited = asyncio.create_task(worker.proc.wait())
        ready = asyncio.create_task(worker.ready.wait())
        try:
            await asyncio.wait({exited, ready}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not worker.ready.is_set():
            exited.cancel()
            worker.signal(signal.SIGKILL)
            raise WorkerStartError(
                f"worker {worker.index} did not start (exit code {worker.proc.returncode}); see its log above"
            )
        exited.cancel()

    async def _keep_alive(self, worker: Worker) -> None:
        """Restart the worker whenever it exits, with backoff, until the service stops."""
        while True:
            assert worker.proc is not None
            code = await worker.proc.wait()
            worker.close_control()
            if self.stopping.is_set():
                return
            ran_s = time.monotonic() - worker.started_at
            if ran_s >= STABLE_AFTER_S:
                worker.backoff_s = RESTART_BACKOFF_INITIAL_S
            delay_s = worker.backoff_s
            worker.backoff_s = min(worker.backoff_s * 2, RESTART_BACKOFF_MAX_S)
            worker.restarts += 1
            log.error(
                "worker exited; restarting",
                worker=worker.index,
                pid=worker.pid,
                exit_code=code,
                signal=signal.Signals(-code).name if code < 0 else None,
                ran_s=round(ran_s, 1),
                restart_in_s=delay_s,
                restarts=worker.restarts,
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=delay_s)
                return  # stopping while waiting to restart
            except TimeoutError:
                pass
            await worker.spawn()

    async def _stop_all(self) -> None:
        grace_s = self.config.shutdown_grace_s
        live = [w for w in self.workers if w.proc is not None and w.proc.returncode is None]
        log.info("stopping workers", workers=len(live), grace_s=grace_s)
        for worker in live:
            worker.signal(signal.SIGTERM)

        async def wait_or_kill(worker: Worker) -> None:
            assert worker.proc is not None
            try:
                await asyncio.wait_for(worker.proc.wait(), timeout=grace_s + STOP_MARGIN_S)
            except TimeoutError:
                log.error("worker did not stop in time; killing it", worker=worker.index, pid=worker.pid)
                worker.signal(signal.SIGKILL)
                await worker.proc.wait()
            worker.close_control()

        await asyncio.gather(*(wait_or_kill(w) for w in live))

    async def run(self) -> None:
        port = self.prepare()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        keepers: list[asyncio.Task[None]] = []
        try:
            for worker in self.workers:
                if self.stopping.is_set():
                    break
                await self._start_first(worker)
                keepers.append(asyncio.create_task(self._keep_alive(worker), name=f"worker-{worker.index}"))
            if not self.stopping.is_set():
                log.info(
                    "serving",
                    host=self.config.grpc_host,
                    port=port,
                    workers=self.count,
                    pids=[w.pid for w in self.workers],
                    metrics_ports=[w.env["BILLING_METRICS_PORT"] for w in self.workers],
                )
            await self.stopping.wait()
        finally:
            self.stopping.set()
            await self._stop_all()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for sock in self._reserved:
                sock.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


async def serve_workers(config: Config, workers: int) -> None:
    """The parent of `serve --workers N`: database, budget check, workers, until SIGTERM or Ctrl-C."""
    check_provider_choice(config)  # before anything is opened that a refusal would leave behind
    database_url, embedded = await open_database(config)
    try:
        await apply_migrations(database_url)
        await check_connection_budget(database_url, config, processes=workers)
        await Supervisor(config, workers, database_url).run()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    log.info("stopped")
