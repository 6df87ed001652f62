"""BILLING_EVENT_LOOP picks the loop `serve` runs on; each case in a process of its own, as `serve` is."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import load_config

PROBE = """
import sys
from service import event_loop

async def main():
    return event_loop.loop_name()

print(event_loop.run(main(), sys.argv[1]))
"""


def _loop_for(choice: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, choice], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build")
def test_auto_and_uvloop_run_on_uvloop_where_it_is_installed() -> None:
    assert _loop_for("auto") == "uvloop"
    assert _loop_for("uvloop") == "uvloop"


def test_asyncio_keeps_the_standard_loop() -> None:
    assert _loop_for("asyncio") == "asyncio"


def test_the_default_is_auto() -> None:
    assert load_config({}).event_loop == "auto"
    assert load_config({"BILLING_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
