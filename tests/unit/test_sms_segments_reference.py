"""Segment counts agree with Twilio's segment calculator on a corpus of 2,000 messages.

The table holds each message with the count and encoding that the npm package `sms-segments-calculator`
1.3.0 gave for it, written by `scripts/sms_differential.py --write-table` (which also runs the same
comparison live, with node, on corpora of any size): the suite itself needs no node.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from service.domain.sms_segments import SmsEncoding, count_segments

TABLE = Path(__file__).with_name("sms_segments_reference.json.gz")


def test_every_message_of_the_reference_table_gets_the_calculators_count_and_encoding() -> None:
    rows = json.loads(gzip.decompress(TABLE.read_bytes()).decode("utf-8"))
    assert len(rows) == 2000
    mismatches = []
    for body, segments, encoding in rows:
        counted = count_segments(body)
        if (counted.segments, counted.encoding) != (segments, SmsEncoding(encoding)):
            mismatches.append((body[:40], segments, encoding, counted.segments, counted.encoding))
    assert mismatches == []
    # The corpus exercises both encodings, single and split messages.
    kinds = {(segments > 1, encoding) for _, segments, encoding in rows}
    assert kinds == {(False, "gsm7"), (True, "gsm7"), (False, "ucs2"), (True, "ucs2")}
