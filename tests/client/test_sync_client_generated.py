"""The committed blocking client is exactly what unasync generates from the async one (CI fails on drift)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_sync_client_matches_the_async_one() -> None:
    # --check regenerates into a temporary folder and compares; it never writes the committed file.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_sync_client.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "matches" in result.stdout
