"""Random (version 4) UUIDs made many at a time, for the ids a batch of usages proposes.

`uuid.uuid4()` costs a call to os.urandom and a pure-Python `UUID.__init__` per id, which a batch of
1,000 usages felt. Here one os.urandom call gives every id's bytes, the version and variant bits are set
for all of them with two byte translations, and each id is asyncpg's UUID (a C type, a subclass of
`uuid.UUID` that compares and hashes like one): the same ids, and the type the database hands back.
"""

from __future__ import annotations

import os
import uuid

from asyncpg.pgproto.pgproto import UUID as _FastUUID

_ID_BYTES = 16
# RFC 4122, section 4.4: the version nibble (byte 6) is 4, the variant bits (byte 8) are 10.
_VERSION_4 = bytes((byte & 0x0F) | 0x40 for byte in range(256))
_VARIANT_RFC_4122 = bytes((byte & 0x3F) | 0x80 for byte in range(256))


def proposed_ids(count: int) -> list[uuid.UUID]:
    raw = bytearray(os.urandom(_ID_BYTES * count))
    raw[6::_ID_BYTES] = raw[6::_ID_BYTES].translate(_VERSION_4)
    raw[8::_ID_BYTES] = raw[8::_ID_BYTES].translate(_VARIANT_RFC_4122)
    view = bytes(raw)
    return [_FastUUID(view[start : start + _ID_BYTES]) for start in range(0, len(view), _ID_BYTES)]
