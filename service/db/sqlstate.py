"""Postgres SQLSTATEs the service turns into domain errors (its own BLxxx codes are raised in SQL)."""

# bigint overflow: units x unit price, or a balance, that a 64-bit nano-USD column cannot hold.
NUMERIC_VALUE_OUT_OF_RANGE = "22003"
