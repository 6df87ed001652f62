"""Counting SMS segments the way carriers do (3GPP TS 23.038 / 23.040).

A segment carries 140 octets of user data. A message that fits GSM 03.38 is sent in 7-bit septets:
160 in a single segment, 153 per segment once it is split (the 6-octet concatenation header takes the
room of 7 septets). Characters of the GSM extension table take two septets (an escape plus the
character) and are never split across segments. GSM-7 is counted per character.

Any character outside GSM-7 turns the whole message into UCS-2: 70 UTF-16 code units in a single
segment, 67 per segment once split. A UCS-2 message is counted per user-perceived character, an
extended grapheme cluster of UAX #29 (`service/domain/sms_graphemes.py`, which follows the Unicode
10.0 rules Twilio's calculator uses), and a cluster is never split across segments: a ZWJ sequence
such as the family emoji (11 code units), a flag (two regional indicators, 4 units), an emoji with a
skin-tone modifier (4 units), a keycap, or a letter with its combining marks moves whole to the next
segment when it does not fit. The one exception is CR LF, which UAX #29 joins into one cluster: CR
and LF are two characters of their own, as in GSM-7.

The segments are filled in order, greedily, the way Twilio's segment calculator (the npm package
`sms-segments-calculator`, our reference) fills them: the first segment takes up to 70 units; when a
cluster does not fit, a new segment starts, and if the first segment had no header yet it makes room
for one by moving its last clusters to the new segment, followed by the cluster that did not fit. A
cluster longer than a segment on its own (only seen in pathological runs of combining marks) takes the
segment it lands in past its size, and the next cluster starts a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from service.domain.sms_graphemes import grapheme_clusters

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


def ucs2_characters(body: str) -> list[str]:
    """The characters of `body` as they are packed whole into UCS-2 segments."""
    characters: list[str] = []
    for cluster in grapheme_clusters(body):
        if cluster == "\r\n":
            characters.extend(cluster)
        else:
            characters.append(cluster)
    return characters


def ucs2_units(text: str) -> int:
    """UTF-16 code units of `text`: 2 for a character outside the Basic Multilingual Plane, else 1."""
    return sum(2 if ord(char) > 0xFFFF else 1 for char in text)


def _pack(widths: Sequence[int], single_capacity: int, multipart_capacity: int) -> int:
    """Segments needed when each item of `widths` must sit whole inside one segment."""
    if sum(widths) <= single_capacity:
        return 1
    segments: list[list[int]] = [[]]
    used = 0
    capacity = single_capacity
    for width in widths:
        if capacity - used < width:
            carried: list[int] = []
            if len(segments) == 1:
                # The first segment now needs the concatenation header: its tail moves on.
                first = segments[0]
                while sum(first) > multipart_capacity:
                    carried.insert(0, first.pop())
            segments.append(carried)
            used, capacity = sum(carried), multipart_capacity
        segments[-1].append(width)
        used += width
    return len(segments)


def count_segments(body: str) -> SegmentCount:
    """An empty body is still one (empty) message on the wire, so it counts as one segment."""
    septets = _gsm7_septets(body)
    if septets is not None:
        segments = _pack(septets, GSM7_SINGLE_SEGMENT_SEPTETS, GSM7_MULTIPART_SEGMENT_SEPTETS)
        return SegmentCount(segments, SmsEncoding.GSM7)
    units = [ucs2_units(character) for character in ucs2_characters(body)]
    return SegmentCount(
        _pack(units, UCS2_SINGLE_SEGMENT_UNITS, UCS2_MULTIPART_SEGMENT_UNITS), SmsEncoding.UCS2
    )
