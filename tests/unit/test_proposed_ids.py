"""proposed_ids(): random version-4 UUIDs that behave as uuid.UUID does."""

from __future__ import annotations

import uuid

from service.app.proposed_ids import proposed_ids


def test_ids_are_distinct_version_4_uuids_equal_to_their_uuid_twins() -> None:
    ids = proposed_ids(2000)
    assert len(ids) == 2000
    assert len(set(ids)) == 2000
    for proposed in ids:
        assert isinstance(proposed, uuid.UUID)
        assert proposed.version == 4
        assert proposed.variant == uuid.RFC_4122
        twin = uuid.UUID(str(proposed))
        assert twin == proposed and proposed == twin
        assert hash(twin) == hash(proposed)
    assert proposed_ids(0) == []


def test_every_random_bit_varies() -> None:
    # 122 bits are random; over 2,000 ids each of them is seen both set and clear.
    ids = [i.int for i in proposed_ids(2000)]
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the two variant bits
    ones = 0
    zeros = 0
    for value in ids:
        ones |= value
        zeros |= ~value
    assert ones | fixed == (1 << 128) - 1
    assert zeros & ((1 << 128) - 1) | fixed == (1 << 128) - 1
