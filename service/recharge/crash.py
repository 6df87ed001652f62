"""TEST-ONLY crash points: make the process die at a chosen step, as a power cut would.

The crash tests (tests/recharge/test_crash_points.py) run the worker as a subprocess with
``BILLING_TEST_CRASH_AT=<point>``; at that point the process ends with ``os._exit`` (no cleanup, no
``finally``, no flushing), then the test starts a fresh worker and checks that exactly one charge
and one credit result. Never set this variable in production.

Points: ``after_attempt_commit`` (the attempt row is committed, the provider not yet called),
``after_response_before_write`` (the provider answered, nothing recorded yet), and for the backup
card ``after_fallback_commit`` (the primary's decline and the fallback attempt are committed, the
backup not yet charged) and ``fallback_after_response_before_write`` (the backup's charge answered,
nothing recorded yet). "After the request is
sent" is tested by killing the worker with SIGKILL while the fake Stripe holds its answer.
"""

from __future__ import annotations

import os
import sys

CRASH_ENV = "BILLING_TEST_CRASH_AT"
CRASH_EXIT_CODE = 86


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        print(f"crash point {name}: exiting now", file=sys.stderr, flush=True)
        os._exit(CRASH_EXIT_CODE)
