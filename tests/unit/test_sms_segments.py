"""Segment counting as carriers do it: GSM-7 160/153 with 2-septet extension characters, UCS-2 70/67."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.sms_segments import GSM7_BASIC, GSM7_EXTENSION, SmsEncoding, count_segments


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
