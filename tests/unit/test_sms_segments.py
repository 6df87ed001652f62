"""Segment counting as carriers do it: GSM-7 160/153 with 2-septet extension characters, UCS-2 70/67
with user-perceived characters (grapheme clusters) never split. The expected counts of the UCS-2
boundary examples were checked with Twilio's calculator (npm `sms-segments-calculator` 1.3.0)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.sms_graphemes import grapheme_clusters
from service.domain.sms_segments import GSM7_BASIC, GSM7_EXTENSION, SmsEncoding, count_segments, ucs2_units

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # 11 code units, one character


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_plain_text(length: int, segments: int) -> None:
    counted = count_segments("a" * length)
    assert counted.encoding is SmsEncoding.GSM7
    assert counted.segments == segments


def test_empty_message_is_one_segment() -> None:
    assert count_segments("").segments == 1


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_extension_characters_count_as_two_septets(char: str) -> None:
    assert count_segments(char * 80).segments == 1  # 160 septets
    assert count_segments("a" + char * 80).segments == 2  # 161 septets


def test_extension_character_is_not_split_at_a_segment_boundary() -> None:
    # 152 septets of plain text leave one septet in the first part; the euro sign needs two, so it moves
    # to the second part: 152 + [2 + 152] + [1] -> 3 segments, not 2.
    body = "a" * 152 + "€" + "a" * 153
    assert sum(2 if c == "€" else 1 for c in body) == 307
    assert count_segments(body).segments == 3
    # Shifted by one, the euro fits exactly at the end of the first part: 151 + 2 = 153, then 153.
    assert count_segments("a" * 151 + "€" + "a" * 153).segments == 2


@pytest.mark.parametrize(("length", "segments"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_text(length: int, segments: int) -> None:
    counted = count_segments("ж" * length)
    assert counted.encoding is SmsEncoding.UCS2
    assert counted.segments == segments


def test_one_non_gsm_character_makes_the_whole_message_ucs2() -> None:
    counted = count_segments("a" * 69 + "ж")
    assert (counted.encoding, counted.segments) == (SmsEncoding.UCS2, 1)
    counted = count_segments("a" * 70 + "ж")
    assert (counted.encoding, counted.segments) == (SmsEncoding.UCS2, 2)


def test_emoji_is_two_code_units() -> None:
    assert count_segments("😀" * 35).segments == 1  # 70 units
    assert count_segments("a" + "😀" * 35).segments == 2  # 71 units


def test_emoji_is_never_split_across_segments() -> None:
    # 66 units leave one unit in the first part; the emoji's surrogate pair moves to the second part.
    body = "ж" * 66 + "😀" + "ж" * 66
    assert count_segments(body).segments == 3
    assert count_segments("ж" * 65 + "😀" + "ж" * 67).segments == 2


@given(st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=1600))
def test_gsm_segments_hold_every_septet(body: str) -> None:
    septets = sum(2 if c in GSM7_EXTENSION else 1 for c in body)
    segments = count_segments(body).segments
    if septets <= 160:
        assert segments == 1
    else:
        assert segments * 153 >= septets
        assert (segments - 1) * 153 < septets + segments  # at most one septet wasted per boundary


@given(st.text(max_size=1600))
def test_any_text_gets_at_least_one_segment(body: str) -> None:
    assert count_segments(body).segments >= 1


def test_family_emoji_straddling_unit_67_moves_whole_to_the_next_segment() -> None:
    # Units 61-71: split by surrogate pairs only, the first segment would take 66 units (the man, the
    # woman and two joiners) and the message would fit in two segments; kept whole, it needs three.
    body = "ж" * 60 + FAMILY + "ж" * 57
    assert ucs2_units(body) == 128
    assert (count_segments(body).segments, count_segments(body).encoding) == (3, SmsEncoding.UCS2)
    # Ending exactly at unit 67, it stays in the first segment.
    assert count_segments("ж" * 56 + FAMILY + "ж" * 67).segments == 2
    assert count_segments("ж" * 56 + FAMILY + "ж" * 68).segments == 3


@pytest.mark.parametrize(
    ("name", "cluster"),
    [
        ("flag", "\U0001f1eb\U0001f1f7"),
        ("skin tone", "\U0001f44d\U0001f3fd"),
        ("combining acute", "e\u0301"),
        ("keycap", "1\ufe0f\u20e3"),
        ("rainbow flag", "\U0001f3f3\ufe0f\u200d\U0001f308"),
        ("hangul jamo", "\u1100\u1161\u11a8"),
    ],
)
def test_a_cluster_is_never_split_at_the_first_boundary(name: str, cluster: str) -> None:
    assert len(grapheme_clusters(cluster)) == 1, name
    width = ucs2_units(cluster)
    # Straddling unit 67 (one unit too far), it moves whole: 68 - width units stay in the first segment
    # and the second gets width + 68 - width = 68 units, too many. Split by code unit, two would do.
    assert count_segments("ж" * (68 - width) + cluster + "ж" * (68 - width)).segments == 3
    # Ending exactly at unit 67, it stays in the first segment.
    assert count_segments("ж" * (67 - width) + cluster + "ж" * 67).segments == 2


def test_cr_lf_is_two_characters_that_may_be_split() -> None:
    assert count_segments("ж" * 66 + "\r\n" + "ж" * 66).segments == 2


def test_sequences_the_calculator_splits_follow_its_unicode_10_rules() -> None:
    # Later versions of UAX #29 keep these whole (an Indic conjunct; a modifier on an emoji that became
    # a modifier base after Unicode 10), which would bill 3; Twilio's calculator splits them and bills 2.
    assert count_segments("ж" * 65 + "\u0915\u094d\u0937" + "ж" * 66).segments == 2
    assert count_segments("ж" * 65 + "\U0001faf6\U0001f3fd" + "ж" * 65).segments == 2


def test_a_cluster_longer_than_a_segment_takes_one_of_its_own() -> None:
    assert count_segments("a" + "\u0301" * 80).segments == 2
    assert count_segments("ж" * 40 + "a" + "\u0301" * 40 + "ж" * 40).segments == 3


_ANY_TEXT = st.text(
    st.characters(exclude_categories=["Cs"])
    | st.sampled_from(["\u200d", "\U0001f3fd", "\u0301", "\U0001f1eb"]),
    max_size=400,
)


@given(_ANY_TEXT)
def test_clusters_cover_the_body_exactly(body: str) -> None:
    clusters = grapheme_clusters(body)
    assert "".join(clusters) == body
    assert all(clusters)


@given(_ANY_TEXT)
def test_ucs2_segments_hold_every_unit(body: str) -> None:
    counted = count_segments(body)
    if counted.encoding is SmsEncoding.GSM7:
        return
    units = ucs2_units(body)
    if units <= 70:
        assert counted.segments == 1
    else:
        assert counted.segments >= -(-units // 67)
        # Each boundary wastes less than the widest character; a character wider than a segment may add
        # one segment of its own.
        widest = max(ucs2_units(cluster) for cluster in grapheme_clusters(body))
        assert (counted.segments - 1) * (67 - widest + 1) <= units or widest > 67


@given(_ANY_TEXT, st.characters(exclude_categories=["Cs"]))
def test_a_longer_message_never_needs_fewer_segments(body: str, char: str) -> None:
    assert count_segments(body + char).segments >= count_segments(body).segments
