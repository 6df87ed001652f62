"""Which database errors mean "the database cannot be reached now" or "a concurrent transaction got in
the way", as opposed to a fault in our code.

A client retries UNAVAILABLE and ABORTED (with the same idempotency key, so nothing is applied twice),
but never INTERNAL: an unreachable socket, a connection killed under a statement, or a server that is
restarting must therefore never surface as INTERNAL. The gRPC edge (`service/api/errors.py`) asks here.
"""

from __future__ import annotations

import asyncpg

# SQLSTATE classes and codes: 08 connection exception, 53 insufficient resources (too many connections,
# out of memory, disk full), 57P01-57P03 admin/crash shutdown and "cannot connect now" (starting up or
# in recovery), 57014 a statement cancelled (statement_timeout, or our own shutdown).
_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_STATES = frozenset(("57P01", "57P02", "57P03", "57P04", "57P05", "57014", "58030"))
# 40001 serialization failure, 40P01 deadlock: the transaction rolled back; a retry can succeed.
_CONFLICT_STATES = frozenset(("40001", "40P01"))
# asyncpg's client-side errors for a connection or pool that is gone (not for misuse, such as
# "another operation is in progress", which is a bug of ours).
_GONE_MESSAGES = ("connection is closed", "connection was closed", "pool is closing", "pool is closed")


def is_unreachable(error: BaseException) -> bool:
    """True if `error` says the database could not be reached or went away during the call."""
    if isinstance(error, asyncpg.PostgresError):
        state = error.sqlstate or ""
        return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES
    if isinstance(error, asyncpg.InterfaceError):
        return any(text in str(error) for text in _GONE_MESSAGES)
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        # The server ended the connection (pg_terminate_backend, a shutdown) while it sat idle in the
        # pool: its "terminating connection" message left the protocol mid-state, and the next statement
        # on it fails here, before anything is sent.
        return "cannot switch to state" in str(error)
    # OSError: refused, reset, or no socket file (FileNotFoundError on a Unix socket); TimeoutError: no
    # connection within the pool's acquire or connect timeout.
    return isinstance(error, ConnectionError | FileNotFoundError | TimeoutError) or (
        type(error) is OSError  # e.g. "Connect call failed", "Network is unreachable"
    )


def is_conflict(error: BaseException) -> bool:
    """True if `error` is a serialization failure or deadlock: nothing was applied, a retry can succeed."""
    return isinstance(error, asyncpg.PostgresError) and (error.sqlstate or "") in _CONFLICT_STATES
