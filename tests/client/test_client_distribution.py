"""The client distribution installs alone into a fresh virtual environment and its own tests pass there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing of the dev venv (PYTHONPATH, VIRTUAL_ENV) may leak into the fresh one.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["BILLING_CLIENT_EXPECT_INSTALLED"] = "1"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_client_installs_without_server_dependencies_and_its_tests_pass(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = _run(
        [
            str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "-c", str(ROOT / "constraints.txt"),
            str(ROOT / "clients"), "pytest", "pytest-asyncio",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]

    # Run from tmp_path so that nothing from the repository is on sys.path: only what pip installed.
    probe = _run(
        [
            str(python), "-c",
            "import importlib.util as u, consofta.billing.client as c, consofta.billing.v1.usage_pb2 as p;"
            "print(c.__file__); print(p.__file__);"
            "print(*[m for m in ('asyncpg', 'stripe', 'service', 'structlog') if u.find_spec(m)])",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    client_file, stubs_file, server_modules = probe.stdout.splitlines()
    assert "site-packages" in client_file and "site-packages" in stubs_file
    assert server_modules == ""  # none of the server's dependencies came along

    # The installed package ships its type information.
    package = Path(client_file).parent
    stubs = package.parent / "v1"
    assert (package / "py.typed").exists()
    assert (stubs / "py.typed").exists() and (stubs / "usage_pb2.pyi").exists()

    # The client's tests, with the installed package (pytest's script does not put cwd on sys.path).
    pytest_bin = str(venv / "bin" / "pytest")
    tests = _run([pytest_bin, "-q", "-p", "no:cacheprovider", "tests"], cwd=ROOT / "clients")
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout
