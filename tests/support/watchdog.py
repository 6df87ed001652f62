"""A time limit for each async test that says where it was stuck.

A hung await (a lock never released, a server that never answers) would otherwise hold the whole run
until CI's own limit kills it, with no word on where. When an async test passes its limit, every
task's await chain is written to stderr (the test's captured output) and the test is cancelled, so it
fails alone and the rest of the suite goes on. pytest-timeout (`timeout` in pyproject.toml) stays as
the backstop for what a cancel cannot reach: a sync test, or an await that swallows the cancel.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any

import pytest

ASYNC_TEST_LIMIT_S = 300.0


def _frames(awaitable: object) -> Iterator[FrameType]:
    # Walks coroutine -> what it awaits -> ..., the chain Task.get_stack() cuts at its first frame.
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            yield frame
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)


def dump_tasks(reason: str) -> None:
    out = sys.stderr
    print(f"== {reason}: every task's await chain", file=out)
    for task in asyncio.all_tasks():
        print(f"-- task {task.get_name()}", file=out)
        for frame in _frames(task.get_coro()):
            print(f"   {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}", file=out)
    out.flush()


def bounded(test: Callable[..., Coroutine[Any, Any, Any]], limit_s: float) -> Callable[..., Any]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            dump_tasks(f"{test.__qualname__} still running after {limit_s:g} s")
            task.cancel()

        timer = asyncio.get_running_loop().call_later(limit_s, expire)
        try:
            return await test(*args, **kwargs)
        except asyncio.CancelledError:
            if expired:
                pytest.fail(f"still running after {limit_s:g} s; the await chains are in its stderr")
            raise
        finally:
            timer.cancel()

    return run


def bound_async_tests(items: list[pytest.Item], limit_s: float = ASYNC_TEST_LIMIT_S) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        test = item.obj
        # Hypothesis drives its own async tests; wrapping would hide them from pytest-asyncio.
        if inspect.iscoroutinefunction(test) and not hasattr(test, "hypothesis"):
            item.obj = bounded(test, limit_s)
