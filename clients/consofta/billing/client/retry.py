"""When to retry a failed call and how long to wait before the next attempt.

Every RPC of the billing service is safe to repeat: reads have no effect, and each mutation carries an
idempotency key that the client fixes BEFORE the first attempt, so a repeat of a mutation that did
happen returns the stored response (`replayed`) instead of debiting twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

# UNAVAILABLE: not reached, or the connection broke (the call may have happened).
# ABORTED: a conflict that a repeat can resolve.
# DEADLINE_EXCEEDED: no answer in time (the call may have happened).
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)


@dataclass(frozen=True)
class RetryEvent:
    """Told to `RetryPolicy.on_retry` after a failed attempt, before the client waits and retries."""

    method: str
    attempt: int
    code: grpc.StatusCode
    delay_s: float


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    The wait before attempt n+1 is uniform in [0, min(max_backoff_s, initial_backoff_s * multiplier**(n-1))]:
    full jitter keeps many clients that failed together from retrying together. Each attempt has its own
    deadline (the call's `timeout_s`), so the worst case for one call is about
    max_attempts * timeout_s + the sum of the waits.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    retryable_codes: frozenset[grpc.StatusCode] = RETRYABLE_CODES
    # Called before each retry, e.g. to log or count retries. Must not raise.
    on_retry: Callable[[RetryEvent], None] | None = field(default=None, compare=False)
    # The jitter source; a seeded random.Random makes the waits reproducible.
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    def should_retry(self, code: grpc.StatusCode, attempt: int) -> bool:
        """Whether attempt number `attempt` (1-based), which failed with `code`, is followed by another."""
        return code in self.retryable_codes and attempt < self.max_attempts

    def delay_s(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return self.rng.uniform(0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)
