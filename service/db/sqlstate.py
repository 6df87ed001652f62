"""Postgres SQLSTATEs the service turns into domain errors, its own BLxxx codes included."""

# bigint overflow: units x unit price, or a balance, that a 64-bit nano-USD column cannot hold.
NUMERIC_VALUE_OUT_OF_RANGE = "22003"
# An append-only table (the ledger, events, rate cards, audit trails) refused an update or delete.
APPEND_ONLY = "BL001"
# The company has no wallet.
NO_WALLET = "BL404"
# No rate card has a price for the rate key at that moment.
NO_RATE = "BL412"
# The hold does not exist for the company.
HOLD_NOT_FOUND = "BLH04"
# The hold was captured already (by the usage record named in the message).
HOLD_CAPTURED = "BLH09"
# The hold was released.
HOLD_RELEASED = "BLH10"
