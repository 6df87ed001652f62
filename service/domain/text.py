"""How a caller's value is echoed back in an error: a short prefix, never the whole of it.

A value can be megabytes long (a bad currency code, a forged token); echoing it whole into the message
and the BadRequest would push the status past gRPC's metadata limit, and the caller would see
RESOURCE_EXHAUSTED instead of the field that is wrong. Every echoed value goes through `excerpt()`.
"""

from __future__ import annotations

import unicodedata

EXCERPT_CHARS = 32

# Unicode categories refused in names and free text shown to people: controls (C0, C1 such as U+0085),
# format characters (bidirectional overrides such as U+202E), line and paragraph separators, surrogates
# and private use.
_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co"))
# Format characters that emoji sequences and some scripts need: zero-width (non-)joiner.
_ALLOWED_FORMAT = frozenset(("\u200c", "\u200d"))


def excerpt(value: object, limit_chars: int = EXCERPT_CHARS) -> str:
    """`repr` of the value's first `limit_chars` characters, saying how long the whole was if cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit_chars:
        return repr(text)
    return f"{text[:limit_chars]!r}… ({len(text):,} characters)"


def has_unprintable(value: str, allowed: str = "") -> bool:
    """True if `value` holds a control, format or separator character (other than those in `allowed`)."""
    return any(
        c not in allowed and c not in _ALLOWED_FORMAT and unicodedata.category(c) in _REFUSED_CATEGORIES
        for c in value
    )
