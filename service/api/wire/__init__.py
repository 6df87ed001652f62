"""Every conversion between protobuf messages and domain values, and nothing else.

Servicers call these to read requests and build responses; use cases never see a protobuf. Enums are
paired by the buf naming convention (`enums.EnumTable`), usage kinds through the registry
(`usage.py`), so a new enum value or usage kind needs no new map here.
"""
