"""Running the real `consofta-billing` command as a separate process, as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ENTRY_POINT = str(Path(sys.executable).parent / "consofta-billing")


def free_port() -> int:
    """A port free at this moment. Prefer port 0 and asking the process which it bound: between this
    call and the process binding it, another program may take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_QUIET = ("warning", "error")


class ServiceProcess:
    """`consofta-billing serve` as a process. Every listener binds port 0 (unless `env` names a port) and
    the port is read from the `serving` log line, so no port is picked before the process binds it. Once
    known, the gRPC port is kept for restarts (`start()` again), as a proxy or a client in front of it
    expects. At a log level that hides the `serving` line, the gRPC port is picked beforehand."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ("serve",)) -> None:
        self.env = {
            **os.environ,
            "BILLING_LOG_FORMAT": "json",
            # Tests of several worktrees run side by side on one machine, beside a service on the default
            # ports: every listener picks a free port.
            "BILLING_GRPC_PORT": "0",
            "BILLING_METRICS_PORT": "0",
            "BILLING_WEBHOOK_PORT": "0",
            **env,
        }
        self.env.pop("DATABASE_URL", None) if "DATABASE_URL" not in env else None
        if self.env.get("BILLING_LOG_LEVEL") in _QUIET:
            # No `serving` line at these levels (the benches run quiet): the ports are picked beforehand.
            for name in ("BILLING_GRPC_PORT", "BILLING_METRICS_PORT"):
                if name not in env:
                    self.env[name] = str(free_port())
        self.port: int | None = int(self.env["BILLING_GRPC_PORT"]) or None
        metrics = self.env["BILLING_METRICS_PORT"]
        # The metrics port of a single server process (`serve --workers N` gives each worker its own).
        self.metrics_port: int | None = int(metrics) if metrics.isdigit() and metrics != "0" else None
        self.log_path = log_path
        self.args = args
        # `serve --workers N`, N > 1: a supervising parent and N worker processes.
        self._supervised = "--workers" in args and args[args.index("--workers") + 1 :][:1] != ("1",)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self) -> None:
        log = self.log_path.open("ab")
        self._log_offset = log.tell()
        self.proc = subprocess.Popen([ENTRY_POINT, *self.args], env=self.env, stdout=log, stderr=log)

    @property
    def target(self) -> str:
        assert self.port is not None, "the port is known once the process says `serving` (wait_serving)"
        return f"127.0.0.1:{self.port}"

    def _served_port(self) -> int | None:
        """The gRPC port from this start's `serving` line, if it has been written yet (and the metrics
        port it names)."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not (isinstance(entry, dict) and entry.get("event") == "serving" and entry.get("port")):
                continue
            # Under `serve --workers N` each worker says `serving` too; the service serves once the
            # parent says so, after every worker has started.
            if self._supervised and "workers" not in entry:
                continue
            if isinstance(entry.get("metrics_port"), int):
                self.metrics_port = entry["metrics_port"]
            return int(entry["port"])
        return None

    async def wait_serving(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"service exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            port = self.port if self.env.get("BILLING_LOG_LEVEL") in _QUIET else self._served_port()
            if port is not None:
                self.port = port
                self.env["BILLING_GRPC_PORT"] = str(port)  # a restart binds the same port again
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(
                f"service did not say `serving` within {timeout_s}s:\n{self.log_path.read_text()}"
            )
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"service exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                    )
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"service not SERVING after {timeout_s}s:\n{self.log_path.read_text()}")

    async def wait_all_workers(self, workers: int, timeout_s: float = 60) -> None:
        """For `serve --workers N`: wait until N worker processes listen on the gRPC port.

        Health answers as soon as the first worker does, and connections made before the others
        listen all stay on it."""
        import psutil

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"service exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            listening = 0
            for child in psutil.Process(self.proc.pid).children():
                try:
                    sockets = child.net_connections(kind="tcp")
                except psutil.Error:
                    continue
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in sockets):
                    listening += 1
            if listening >= workers:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"not {workers} workers listening after {timeout_s}s:\n{self.log_path.read_text()}"
        )

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"service did not exit within {timeout_s}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
