"""User-perceived characters (extended grapheme clusters) as Twilio's segment calculator finds them.

The calculator segments with grapheme-splitter, an implementation of UAX #29 for Unicode 10.0: a
cluster is a base with its combining marks, a ZWJ emoji sequence, a pair of regional indicators (a
flag), an emoji with its skin-tone modifier, a Hangul syllable, CR LF. Later versions of UAX #29
join more (Extended_Pictographic after a ZWJ since 11.0, any emoji before a modifier, Indic conjuncts
since 15.1), and a segmenter that follows them, such as the `regex` module's ``\\X``, bills one
segment more than Twilio for a message where such a sequence straddles a segment boundary. Billing
follows Twilio, so this module follows its rules and its property table
(`sms_grapheme_table.py`), the algorithm kept step for step: its boundary decision looks at the
cluster's first character and every character since, not only the last pair.
"""

from __future__ import annotations

import bisect
from enum import IntEnum

from service.domain.sms_grapheme_table import BREAK_PROPERTY_RANGES


class Gcb(IntEnum):
    OTHER = 0
    CR = 1
    LF = 2
    CONTROL = 3
    EXTEND = 4
    REGIONAL_INDICATOR = 5
    SPACING_MARK = 6
    L = 7
    V = 8
    T = 9
    LV = 10
    LVT = 11
    PREPEND = 12
    E_BASE = 13
    E_MODIFIER = 14
    ZWJ = 15
    GLUE_AFTER_ZWJ = 16
    E_BASE_GAZ = 17


_BY_NAME = {
    "CR": Gcb.CR,
    "LF": Gcb.LF,
    "Control": Gcb.CONTROL,
    "Extend": Gcb.EXTEND,
    "Regional_Indicator": Gcb.REGIONAL_INDICATOR,
    "SpacingMark": Gcb.SPACING_MARK,
    "L": Gcb.L,
    "V": Gcb.V,
    "T": Gcb.T,
    "Prepend": Gcb.PREPEND,
    "E_Base": Gcb.E_BASE,
    "E_Modifier": Gcb.E_MODIFIER,
    "ZWJ": Gcb.ZWJ,
    "Glue_After_Zwj": Gcb.GLUE_AFTER_ZWJ,
    "E_Base_GAZ": Gcb.E_BASE_GAZ,
}
_STARTS = [first for first, _, _ in BREAK_PROPERTY_RANGES]
_ENDS = [last for _, last, _ in BREAK_PROPERTY_RANGES]
_PROPERTIES = [_BY_NAME[name] for _, _, name in BREAK_PROPERTY_RANGES]

_HANGUL_SYLLABLES = range(0xAC00, 0xD7A4)
_HANGUL_TRAILING_CONSONANTS = 28

_E_BASES = (Gcb.E_BASE, Gcb.E_BASE_GAZ)
_CONTROLS = (Gcb.CONTROL, Gcb.CR, Gcb.LF)


def break_property(char: str) -> Gcb:
    code = ord(char)
    if code in _HANGUL_SYLLABLES:
        no_trailing = (code - _HANGUL_SYLLABLES.start) % _HANGUL_TRAILING_CONSONANTS == 0
        return Gcb.LV if no_trailing else Gcb.LVT
    index = bisect.bisect_right(_STARTS, code) - 1
    if index >= 0 and code <= _ENDS[index]:
        return _PROPERTIES[index]
    return Gcb.OTHER


class _Cluster:
    """A cluster's characters so far, with the indexes the boundary decision asks about kept as it
    grows, so that a long run of combining marks costs linear time, not quadratic. Indexes are into
    `props` (the first character, then the rest); -1 means none."""

    def __init__(self, first: Gcb) -> None:
        self.props = [first]
        self.first_not_extend_after_start = -1
        self.first_not_regional_after_start = -1
        self.last_modifier = 0 if first is Gcb.E_MODIFIER else -1
        self.last_regional = 0 if first is Gcb.REGIONAL_INDICATOR else -1
        self.last_extend = 0 if first is Gcb.EXTEND else -1

    def add(self, prop: Gcb) -> None:
        index = len(self.props)
        self.props.append(prop)
        if prop is not Gcb.EXTEND and self.first_not_extend_after_start == -1:
            self.first_not_extend_after_start = index
        if prop is not Gcb.REGIONAL_INDICATOR and self.first_not_regional_after_start == -1:
            self.first_not_regional_after_start = index
        if prop is Gcb.E_MODIFIER:
            self.last_modifier = index
        elif prop is Gcb.REGIONAL_INDICATOR:
            self.last_regional = index
        elif prop is Gcb.EXTEND:
            self.last_extend = index


def _all_between(first_other: int, stop: int) -> bool:
    """Whether indexes 1 up to `stop` hold only the class whose first other index is `first_other`."""
    return first_other == -1 or first_other >= stop


def _breaks(cluster: _Cluster, end: Gcb) -> bool:
    """Whether `cluster` ends before a character of class `end`. As in the calculator, the decision
    reads the sequence (first, *rest, end) whose index `end_at` is the end's."""
    props = cluster.props
    start, previous, end_at = props[0], props[-1], len(props)
    if end is Gcb.OTHER and previous is not Gcb.PREPEND:
        return True  # what every rule below answers for it, checked first because it is most text
    modifier_at = end_at if end is Gcb.E_MODIFIER else cluster.last_modifier
    if (
        modifier_at > 1
        and _all_between(cluster.first_not_extend_after_start, modifier_at)
        and start not in (Gcb.EXTEND, *_E_BASES)
    ):
        return True
    regional_at = end_at if end is Gcb.REGIONAL_INDICATOR else cluster.last_regional
    if (
        regional_at > 0
        and _all_between(cluster.first_not_regional_after_start, regional_at)
        and previous not in (Gcb.PREPEND, Gcb.REGIONAL_INDICATOR)
    ):
        return True
    if previous is Gcb.CR and end is Gcb.LF:  # GB3
        return False
    if previous in _CONTROLS or end in _CONTROLS:  # GB4, GB5
        return True
    if previous is Gcb.L and end in (Gcb.L, Gcb.V, Gcb.LV, Gcb.LVT):  # GB6
        return False
    if previous in (Gcb.LV, Gcb.V) and end in (Gcb.V, Gcb.T):  # GB7
        return False
    if previous in (Gcb.LVT, Gcb.T) and end is Gcb.T:  # GB8
        return False
    if end in (Gcb.EXTEND, Gcb.ZWJ, Gcb.SPACING_MARK) or previous is Gcb.PREPEND:  # GB9, GB9a, GB9b
        return False
    if end is Gcb.E_MODIFIER:  # GB10, as the calculator has it: a base, at most one Extend, the modifier
        extend_at = cluster.last_extend
        base_at = extend_at - 1 if extend_at != -1 else end_at - 1
        only_extend_after_base = extend_at in (-1, end_at - 1)
        if base_at >= 0 and props[base_at] in _E_BASES and only_extend_after_base:
            return False
    if previous is Gcb.ZWJ and end in (Gcb.GLUE_AFTER_ZWJ, Gcb.E_BASE_GAZ):  # GB11
        return False
    if cluster.last_regional >= 1:  # GB12, GB13: a regional indicator after the first character
        return True
    return not (previous is Gcb.REGIONAL_INDICATOR and end is Gcb.REGIONAL_INDICATOR)


def grapheme_clusters(text: str) -> list[str]:
    clusters: list[str] = []
    first = 0
    while first < len(text):
        cluster = _Cluster(break_property(text[first]))
        after = first + 1
        while after < len(text):
            prop = break_property(text[after])
            if _breaks(cluster, prop):
                break
            cluster.add(prop)
            after += 1
        clusters.append(text[first:after])
        first = after
    return clusters
