"""The Docker image's command, run outside a container (no Docker engine on CI machines).

The environment, ENTRYPOINT, CMD and HEALTHCHECK are read from the Dockerfile itself, so the test runs
what the image runs: `consofta-billing serve` with the image's ENV, against a real database, probed by
the image's HEALTHCHECK command until healthy, and stopped with SIGTERM as `docker stop` does.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
from pathlib import Path

import pytest

from tests.support.process import ENTRY_POINT, free_port

pytestmark = pytest.mark.slow

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    parsed = [tuple(line.strip().split(None, 1)) for line in joined.splitlines() if line.strip()]
    last_from = max(i for i, item in enumerate(parsed) if item[0].upper() == "FROM")
    return [(item[0].upper(), item[1] if len(item) > 1 else "") for item in parsed[last_from:]]


def _exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"use the exec form (a JSON array), not {arguments!r}"
    return list(json.loads(arguments))


def image_spec() -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """The image's ENV, its command (ENTRYPOINT + CMD), its HEALTHCHECK command and EXPOSEd ports."""
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    healthcheck: list[str] = []
    exposed: list[str] = []
    for instruction, arguments in _instructions(DOCKERFILE.read_text()):
        if instruction == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
        elif instruction == "ENTRYPOINT":
            entrypoint = _exec_form(arguments)
        elif instruction == "CMD":
            cmd = _exec_form(arguments)
        elif instruction == "HEALTHCHECK":
            healthcheck = _exec_form(arguments.split(" CMD ", 1)[1].strip())
        elif instruction == "EXPOSE":
            exposed += arguments.split()
    return env, entrypoint + cmd, healthcheck, exposed


def test_the_image_exposes_every_port_it_configures() -> None:
    env, command, healthcheck, exposed = image_spec()
    assert command == ["consofta-billing", "serve"]
    assert healthcheck[:2] == ["consofta-billing", "health"]
    assert sorted(exposed) == sorted(
        env[name] for name in ("BILLING_GRPC_PORT", "BILLING_METRICS_PORT", "BILLING_WEBHOOK_PORT")
    )
    # Outside the image every listener defaults to loopback; the image opens each one explicitly.
    assert all(env[f"BILLING_{name}_HOST"] == "0.0.0.0" for name in ("GRPC", "METRICS", "WEBHOOK"))
    # The payment provider is never the image's choice.
    assert "BILLING_PAYMENT_PROVIDER" not in env and "BILLING_ALLOW_SANDBOX" not in env


async def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_image_command_serves_passes_its_healthcheck_and_stops_on_sigterm(
    db_url: str, tmp_path: Path
) -> None:
    image_env, command, healthcheck, _ = image_spec()
    venv_bin = str(Path(ENTRY_POINT).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "DATABASE_URL"))}
    env.update(image_env)
    # What `docker run` would add: the database, and PATH resolved to where the package is installed.
    env["PATH"] = image_env["PATH"].replace("/opt/venv/bin", venv_bin).replace("$PATH", os.environ["PATH"])
    env["DATABASE_URL"] = db_url
    # The provider is the operator's choice, never the image's: a test database may use the sandbox.
    env.update(BILLING_PAYMENT_PROVIDER="sandbox", BILLING_ALLOW_SANDBOX="1")
    # The one change: free ports instead of the fixed ones, as other tests share this machine.
    for name in ("BILLING_GRPC_PORT", "BILLING_METRICS_PORT", "BILLING_WEBHOOK_PORT"):
        env[name] = str(free_port())
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log)
    try:
        for _ in range(300):
            code, out = await _run(healthcheck, env)
            if code == 0:
                break
            assert proc.returncode is None, f"the service exited:\n{log_path.read_text()}"
            await asyncio.sleep(0.2)
        assert code == 0 and "SERVING" in out, log_path.read_text()

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        # Stopped: the healthcheck now fails, with the exit code Docker reads as "unhealthy".
        code, out = await _run(healthcheck, env)
        assert code == 1 and "UNAVAILABLE" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]  # JSON lines, as the image's BILLING_LOG_FORMAT says
    assert "serving" in events and events[-1] == "stopped"
    serving = next(line for line in lines if line["event"] == "serving")
    assert serving["host"] == "0.0.0.0"
