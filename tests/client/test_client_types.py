"""`mypy --strict` passes on the client, on an example service using it and on the client's tests; and it
catches misuse, so the client's types are real and not Any."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "clients" / "pyproject.toml"


def _mypy(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_mypy_strict_passes_on_the_client_and_code_using_it() -> None:
    result = _mypy("clients/consofta/billing/client", "clients/examples", "clients/tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


@pytest.mark.slow
def test_mypy_strict_rejects_misuse_of_the_client(tmp_path: Path) -> None:
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "from consofta.billing.client import AsyncBillingClient, InvalidArgument\n"
        "async def bill(client: AsyncBillingClient) -> str:\n"
        "    await client.record_email('acme', '12')\n"
        "    await client.record_call('acme', 'sideways', 'local', 61)\n"
        "    reply = await client.get_wallet('acme')\n"
        "    try:\n"
        "        pass\n"
        "    except InvalidArgument as error:\n"
        "        return error.field\n"
        "    return reply.wallet.balance\n"
    )
    result = _mypy(misuse)
    assert result.returncode == 1
    assert 'Argument 2 to "record_email"' in result.stdout
    assert 'Argument 2 to "record_call"' in result.stdout
    assert 'Incompatible return value type (got "str | None"' in result.stdout
    assert 'Incompatible return value type (got "Money"' in result.stdout
