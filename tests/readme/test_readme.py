"""The README's commands run as written, in order, against a server started the README's way.

`python3 dev.py serve` with no DATABASE_URL (its own embedded Postgres, in a temporary BILLING_PGDATA),
on a free port: the only change made to the README's commands is that port for `localhost:50051`. A
command fails the test when it exits non-zero, unless it is marked `# expect: CODE` and fails with
exactly that gRPC code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.readme.walkthrough import SERVE, Block, Command, blocks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEFAULT_TARGET = "localhost:50051"
BLOCK_TIMEOUT_S = 300

pytestmark = pytest.mark.readme


@pytest.fixture
def pgdata_parent() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="billing-readme-") as folder:
        os.chmod(folder, 0o755)  # the embedded server runs as its own user when we are root
        yield Path(folder)


def _env(pgdata: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DATABASE_URL"))}
    # python3 is the one a newcomer has, not this virtual environment's: dev.py finds .venv/ itself.
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != Path(sys.executable).parent]
    env.update(
        PATH=os.pathsep.join(path),
        # Port 0: the server picks a free port and says which in its `serving` line.
        BILLING_GRPC_PORT="0",
        BILLING_METRICS_PORT="0",
        BILLING_PGDATA=str(pgdata),
        BILLING_LOG_FORMAT="json",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def _served_port(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> int:
    """The gRPC port the server picked (BILLING_GRPC_PORT=0), from its `serving` log line."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`{SERVE}` exited with {proc.returncode}:\n{log.read_text()}")
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "serving" and entry.get("port"):
                return int(entry["port"])
        time.sleep(0.2)
    raise AssertionError(f"`{SERVE}` did not say `serving`:\n{log.read_text()}")


def _wait_serving(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    port = _served_port(proc, log, deadline)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"`{SERVE}` exited with {proc.returncode}:\n{log.read_text()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return port
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"`{SERVE}` not SERVING after {timeout_s}s:\n{log.read_text()}")


def _grpc_code_of(output: str) -> str | None:
    """The status code grpcurl printed for a failed call (`Code: InvalidArgument`), if any."""
    found = re.search(r"^\s*Code: (\w+)", output, flags=re.MULTILINE)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Ran:
    code: int
    output: str


def _run_block(block: Block, port: int, env: dict[str, str], scratch: Path) -> list[tuple[Command, Ran]]:
    """Run the block's commands in order in one bash, as pasted; each one's exit code and output."""
    script = []
    for n, command in enumerate(block.commands):
        text = command.text.replace(DEFAULT_TARGET, f"localhost:{port}")
        script.append(f'{{\n{text}\n}} >"{scratch}/{n}.out" 2>&1 </dev/null; echo $? >"{scratch}/{n}.rc"')
    subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )
    results = []
    for n, command in enumerate(block.commands):
        rc = scratch / f"{n}.rc"
        assert rc.exists(), f"README line {command.line} did not run: {command.text}"
        results.append((command, Ran(int(rc.read_text()), (scratch / f"{n}.out").read_text())))
        rc.unlink()
    return results


def test_the_walkthrough_blocks_are_found() -> None:
    walk = blocks(README.read_text())
    assert sum(block.is_serve for block in walk) == 1, f"one `{SERVE}` block starts the walk-through"
    runnable = [c for b in walk if not b.skip and not b.needs for c in b.commands]
    assert any("dev.py grpcurl" in c.text for c in runnable)
    assert any("dev.py buf curl" in c.text for c in runnable)
    assert any(c.expect_code for c in runnable), "an error's decoded details are part of the walk-through"


def test_every_readme_command_runs_as_written(pgdata_parent: Path, tmp_path: Path) -> None:
    walk: list[Block] = blocks(README.read_text())
    env = _env(pgdata_parent / "pgdata")
    port = 0
    log = tmp_path / "serve.log"
    server: subprocess.Popen[bytes] | None = None
    ran: list[str] = []
    try:
        for block in walk:
            if block.skip:
                continue
            if block.needs and shutil.which(block.needs, path=env["PATH"]) is None:
                continue
            if block.is_serve:
                assert server is None, "the README starts the server twice"
                with log.open("wb") as out:
                    server = subprocess.Popen(SERVE.split(), cwd=ROOT, env=env, stdout=out, stderr=out)
                port = _wait_serving(server, log)
                continue
            assert server is not None, f"README line {block.line} runs before `{SERVE}`"
            for command, result in _run_block(block, port, env, tmp_path):
                where = f"README line {command.line}: {command.text}\nexit {result.code}:\n{result.output}"
                if command.expect_exit is not None:
                    assert result.code == command.expect_exit, where
                elif command.expect_code is not None:
                    assert result.code != 0, f"expected {command.expect_code}; {where}"
                    assert _grpc_code_of(result.output) == command.expect_code, where
                else:
                    assert result.code == 0, where
                ran.append(command.text)
        assert server is not None, f"the README never runs `{SERVE}`"
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, log.read_text()
    finally:
        if server is not None and server.poll() is None:
            # SIGTERM first: the service stops its embedded Postgres, whose folder goes away next.
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    assert len(ran) >= 10, ran
