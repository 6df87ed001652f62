"""SQLSTATEs the service turns into domain errors: Postgres's own, and the BLxxx codes that the functions
in service/sql/ raise (`raise exception ... using errcode = '...'`). Compare exc.sqlstate with these."""

# bigint overflow: units x unit price, or a balance, that a 64-bit nano-USD column cannot hold.
NUMERIC_VALUE_OUT_OF_RANGE = "22003"

# An update, delete or truncate of an append-only table (reject_ledger_mutation(), append_only.sql).
APPEND_ONLY_VIOLATION = "BL001"
# The company has no wallet (every function that locks or updates a wallet row).
WALLET_NOT_FOUND = "BL404"
# No rate card has a rate for the rate key in effect at the moment priced (record_usage, authorize_usage).
NO_RATE_CARD = "BL412"
# The hold does not exist for this company (record_usage with p_hold_id, release_hold).
HOLD_NOT_FOUND = "BLH04"
# The hold was already captured by a usage record: it can be neither captured again nor released.
HOLD_ALREADY_CAPTURED = "BLH09"
# The hold was released: usage cannot capture it (record_usage with p_hold_id).
HOLD_RELEASED = "BLH10"
# A usage debit would land before the latest running total of its rate key (usage_debit_totals_apply):
# ledger time went backwards, which the ledger's own trigger prevents; refused rather than miscounted.
USAGE_TOTALS_OUT_OF_ORDER = "BLT01"
# The usage record does not exist for this company (void_usage_record).
USAGE_RECORD_NOT_FOUND = "BLV04"
# A void would take a usage record's voids past its amount, or is not positive (void_usage_record).
VOID_EXCEEDS_RECORD = "BLV09"
