"""One worker process of `serve --workers N`: its handle in the parent, and its main in the child.

The parent (service/supervisor.py) spawns `python -m service.worker_process INDEX FD`; the child runs a
whole server and writes READY on its end of the socket pair once it serves. The parent never writes:
when its end closes (it exited, or was killed), the child shuts down.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import structlog

from service.config import Config

log = structlog.get_logger(__name__)

RESTART_BACKOFF_INITIAL_S = 0.5
READY = b"ready\n"


@dataclass
class Worker:
    """One slot of the pool of workers, and the process currently filling it."""

    index: int
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    control: socket.socket | None = None  # the parent's end of the socket pair
    started_at: float = 0.0
    backoff_s: float = RESTART_BACKOFF_INITIAL_S
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _ready_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def spawn(self) -> None:
        parent_end, child_end = socket.socketpair()
        parent_end.setblocking(False)
        self.ready = asyncio.Event()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service.worker_process",
                str(self.index),
                str(child_end.fileno()),
                env=self.env,
                pass_fds=(child_end.fileno(),),
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self.control = parent_end
        self.started_at = time.monotonic()
        self._ready_task = asyncio.create_task(
            self._watch_ready(parent_end), name=f"worker-{self.index}-ready"
        )
        log.info("worker started", worker=self.index, pid=self.proc.pid)

    async def _watch_ready(self, sock: socket.socket) -> None:
        try:
            message = await asyncio.get_running_loop().sock_recv(sock, len(READY))
        except OSError:
            return
        if message == READY:
            self.ready.set()

    def close_control(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


async def _worker_main(config: Config, control: socket.socket) -> None:
    from service.server import start_server

    app = await start_server(config, database_url=config.database_url, reuse_port=True, check_budget=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def parent_gone() -> None:
        # The parent never writes: readable means its end closed (it exited or was killed).
        log.warning("supervisor gone; shutting down")
        loop.remove_reader(control.fileno())
        stop.set()

    loop.add_reader(control.fileno(), parent_gone)
    try:
        control.send(READY)
        await stop.wait()
    finally:
        await app.stop()


def worker_main(index: int, control_fd: int) -> int:
    from service import event_loop, tracing
    from service.config import load_config
    from service.logs import configure_logging

    control = socket.socket(fileno=control_fd)
    control.setblocking(False)
    config = load_config()
    configure_logging(config.log_format, config.log_level)
    # On every line this process logs, so a worker's lines can be told apart.
    structlog.contextvars.bind_contextvars(worker=index)
    traced = tracing.start()  # each worker exports its own spans, as `serve` does alone
    try:
        event_loop.run(_worker_main(config, control), config.event_loop)
    except KeyboardInterrupt:
        pass
    finally:
        if traced is not None:
            traced.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(int(sys.argv[1]), int(sys.argv[2])))
