"""The shutdown drain: calls in flight, so that shutdown can end each one with UNAVAILABLE.

gRPC's own `server.stop(grace)` cancels what is still running when the grace period ends, and the
caller sees CANCELLED, which clients do not retry. Draining first ends those calls ourselves with
UNAVAILABLE ("retry elsewhere with the same key"), and refuses new calls the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

# The cancel message on a call the drain ends; its handler answers UNAVAILABLE_MESSAGE.
DRAIN_MESSAGE = "server shutting down"
UNAVAILABLE_MESSAGE = "the server is shutting down; retry with the same idempotency key"


class Drain:
    """Calls in flight, and whether new ones are refused."""

    def __init__(self) -> None:
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.draining = False

    def enter(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self.in_flight.discard(task)

    def refuse_new_calls(self) -> None:
        """From now on new calls get UNAVAILABLE; those in flight carry on."""
        self.draining = True

    async def drain(self, grace_s: float) -> int:
        """Refuse new calls, wait `grace_s` at most for calls in flight, end the rest; count those."""
        self.refuse_new_calls()
        deadline = asyncio.get_running_loop().time() + grace_s
        # Polled: a 20 ms step is nothing next to a grace period, and the hot path stays a set add/discard.
        while self.in_flight and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        left = list(self.in_flight)
        for task in left:
            task.cancel(DRAIN_MESSAGE)
        # Each cancelled call rolls back its statement and aborts with UNAVAILABLE; give them a moment.
        for _ in range(100):
            if not self.in_flight:
                break
            await asyncio.sleep(0.01)
        return len(left)
