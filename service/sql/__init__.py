"""Repeatable SQL: each function (with its triggers) in one file, re-applied when the file changes.

The migrator (service/db/migrate.py) applies these after the numbered migrations, in APPLY_ORDER: a file
comes after every file whose functions it needs at creation time (a `language sql` body is checked when
it is created; a trigger needs its function). schema.sql is not applied: it is the committed dump of the
whole live schema (scripts/dump_schema.py rewrites it).
"""

from __future__ import annotations

APPLY_ORDER: tuple[str, ...] = (
    "append_only.sql",
    "effective_rate.sql",
    "emit_wallet_event.sql",
    "append_ledger_entry.sql",
    "note_balance_alerts.sql",
    "held_nanos.sql",
    "record_usage.sql",
    "record_usages.sql",
    "claim_idempotency_key.sql",
    "credit_wallet.sql",
    "void_usage_record.sql",
    "note_hold_below_minimum.sql",
    "authorize_usage.sql",
    "extend_hold.sql",
    "release_hold.sql",
    "wallet_suspension_changed.sql",
    "note_card_change.sql",
    "note_recharge_outcome.sql",
    "note_recharge_credit.sql",
    "ledger_entries_monotonic_time.sql",
    "usage_rollup_bucket.sql",
    "usage_rollups_apply.sql",
    "usage_rollups_apply_delete.sql",
    "usage_debit_totals_apply.sql",
)

# The committed schema dump lives in this folder too, but is never applied.
SCHEMA_DUMP = "schema.sql"
