"""Counting SMS segments the way carriers do (3GPP TS 23.038 / 23.040).

A message that fits GSM 03.38 is sent in 7-bit septets: 160 in a single segment, 153 per segment once
it is split (the other 7 septets carry the concatenation header). Characters of the GSM extension table
take two septets (an escape plus the character) and are never split across segments.

Any character outside GSM-7 turns the whole message into UCS-2: 70 UTF-16 code units in a single
segment, 67 per segment once split. A character outside the Basic Multilingual Plane (most emoji) is a
surrogate pair, two code units, and a pair is never split across segments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE_SEGMENT_SEPTETS = 160
GSM7_MULTIPART_SEGMENT_SEPTETS = 153
UCS2_SINGLE_SEGMENT_UNITS = 70
UCS2_MULTIPART_SEGMENT_UNITS = 67


class SmsEncoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


@dataclass(frozen=True)
class SegmentCount:
    segments: int
    encoding: SmsEncoding


def _gsm7_septets(body: str) -> list[int] | None:
    """Septets per character, or None when some character is not in GSM-7."""
    widths = []
    for char in body:
        if char in GSM7_BASIC:
            widths.append(1)
        elif char in GSM7_EXTENSION:
            widths.append(2)
        else:
            return None
    return widths


def _ucs2_units(body: str) -> list[int]:
    return [2 if ord(char) > 0xFFFF else 1 for char in body]


def _pack(widths: Iterable[int], capacity: int) -> int:
    """Segments needed when each item of `widths` must sit whole inside one segment."""
    segments, used = 1, 0
    for width in widths:
        if used + width > capacity:
            segments, used = segments + 1, 0
        used += width
    return segments


def count_segments(body: str) -> SegmentCount:
    """An empty body is still one (empty) message on the wire, so it counts as one segment."""
    septets = _gsm7_septets(body)
    if septets is not None:
        if sum(septets) <= GSM7_SINGLE_SEGMENT_SEPTETS:
            return SegmentCount(1, SmsEncoding.GSM7)
        return SegmentCount(_pack(septets, GSM7_MULTIPART_SEGMENT_SEPTETS), SmsEncoding.GSM7)
    units = _ucs2_units(body)
    if sum(units) <= UCS2_SINGLE_SEGMENT_UNITS:
        return SegmentCount(1, SmsEncoding.UCS2)
    return SegmentCount(_pack(units, UCS2_MULTIPART_SEGMENT_UNITS), SmsEncoding.UCS2)
