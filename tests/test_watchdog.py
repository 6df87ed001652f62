"""The async watchdog fails a stuck test with where it was stuck, and leaves a quick one alone."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.watchdog import bounded


async def _stuck_on_an_event() -> None:
    await asyncio.Event().wait()


async def _quick() -> str:
    await asyncio.sleep(0)
    return "done"


async def test_a_stuck_test_fails_and_its_await_chain_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"still running after 0\.2 s"):
        await bounded(_stuck_on_an_event, 0.2)()
    chains = capsys.readouterr().err
    assert "in _stuck_on_an_event" in chains
    assert "locks.py" in chains  # down to the Event it waits on


async def test_a_quick_test_returns_its_result_and_leaves_no_timer() -> None:
    assert await bounded(_quick, 0.2)() == "done"
    await asyncio.sleep(0.3)  # a timer left behind would cancel this task now
