"""Running the real `consofta-billing` command as a separate process, as an operator would."""

from __future__ import annotations

import asyncio
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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ("serve",)) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "BILLING_LOG_FORMAT": "json",
            **env,
            "BILLING_GRPC_PORT": str(self.port),
            # Free ports for every listener: tests of several worktrees run side by side on one machine.
            "BILLING_METRICS_PORT": str(self.metrics_port),
            "BILLING_WEBHOOK_PORT": str(free_port()),
        }
        self.env.pop("DATABASE_URL", None) if "DATABASE_URL" not in env else None
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([ENTRY_POINT, *self.args], env=self.env, stdout=log, stderr=log)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def wait_serving(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
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
