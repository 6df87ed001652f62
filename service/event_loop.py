"""The event loop the serving processes run on: uvloop where it is installed, asyncio's own otherwise.

uvloop (libuv) runs the loop's own work, the callbacks, sockets and timers that grpc.aio and asyncpg
drive for every call, in C. On the RecordUsage bench it raised the unary rate by about 13% and the
health Check's by about 30% on the same machine and run (the closing note of the hot-path issue has the
figures). `BILLING_EVENT_LOOP`: `auto` (the default) takes uvloop when it can be imported (it has no
Windows build), `uvloop` insists on it, `asyncio` keeps the standard loop. The admin commands and the
recharge `worker` keep asyncio's loop: their work is not per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `choice`, or None for asyncio's default loop (load_config has already refused
    `uvloop` where it cannot be imported)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def loop_name() -> str:
    """What the serving line says: "uvloop" or "asyncio"."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
