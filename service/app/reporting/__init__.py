"""Read-side use cases for the dashboard: usage records, summaries, statements, exports, rates, quotes.

Every figure is read from the same integers the ledger holds; nothing here writes.
"""
