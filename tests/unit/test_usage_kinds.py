"""The usage-kind registry agrees with the contract and the schema, so a new kind is caught wherever
it is missing: a kind without its proto fields, a proto kind without a module, a kind the database
refuses."""

from __future__ import annotations

import re

import asyncpg
import pytest
from consofta.billing.v1 import usage_pb2

from service.api.validation import Violations
from service.api.wire.usage import USAGE_TYPES, category_message, parse_categories, parse_usage, usage_message
from service.domain.usage_kinds import (
    CATEGORY_OF_RATE_KEY,
    DEFAULT_RATES_NANOS,
    KINDS,
    RATE_KEYS,
    CallUsage,
    Direction,
    NumberType,
    SmsUsage,
    kind_of,
    meter,
    price_with_rates,
    usage_from_stored,
)
from tests.support.usage_examples import EXAMPLES, Example

KIND_NAMES = {kind.name for kind in KINDS}


def test_every_usage_field_of_the_contract_is_a_registered_kind_and_back() -> None:
    assert {f.name for f in usage_pb2.Usage.DESCRIPTOR.fields} == KIND_NAMES
    wire_types = {v.name for v in usage_pb2.UsageType.DESCRIPTOR.values if v.number != 0}
    assert wire_types == {f"USAGE_TYPE_{name.upper()}" for name in KIND_NAMES}
    assert all(USAGE_TYPES.domain(USAGE_TYPES.wire(name)) == name for name in KIND_NAMES)


def test_rate_keys_are_the_kind_and_its_dimension_values() -> None:
    assert RATE_KEYS[:7] == (
        "email",
        "call_outbound_local",
        "call_outbound_toll_free",
        "call_inbound_local",
        "call_inbound_toll_free",
        "sms_outbound",
        "sms_inbound",
    )
    assert set(DEFAULT_RATES_NANOS) == set(RATE_KEYS)


def test_a_category_goes_to_the_wire_and_back_for_every_rate_key() -> None:
    for key, category in CATEGORY_OF_RATE_KEY.items():
        v = Violations()
        assert parse_categories(v, [category_message(key)]) == [category]
        assert not v.items


def test_a_stored_usage_reads_back_as_the_usage_and_echoes_on_the_wire() -> None:
    call = CallUsage(Direction.INBOUND, NumberType.TOLL_FREE, 61)
    assert usage_from_stored("call", "call_inbound_toll_free", 61) == call
    sms = usage_from_stored("sms", "sms_outbound", 3)
    assert sms == SmsUsage(Direction.OUTBOUND, segments=3)
    for usage in (call, sms):
        v = Violations()
        assert parse_usage(v, usage_message(usage)) == usage, v.items
        assert kind_of(usage).name in KIND_NAMES


def test_an_unknown_stored_kind_is_an_error_not_another_kind() -> None:
    try:
        usage_from_stored("carrier_pigeon", "carrier_pigeon_outbound", 1)
    except LookupError:
        return
    raise AssertionError("an unknown stored kind must not read back as a known one")


def _literals(definition: str) -> set[str]:
    return set(re.findall(r"'([a-z_0-9]+)'::text", definition))


async def test_the_schema_accepts_exactly_the_registered_kinds_and_rate_keys(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        """
        select conrelid::regclass::text as table_name, pg_get_constraintdef(oid) as definition
          from pg_constraint
         where contype = 'c' and conrelid::regclass::text in ('usage_records', 'holds', 'rate_card_rates')
        """
    )
    by_column: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        for column in ("usage_type", "rate_key"):
            if f"({column} = ANY" in row["definition"]:
                by_column[(row["table_name"], column)] = _literals(row["definition"])
    assert by_column[("usage_records", "usage_type")] == KIND_NAMES
    assert by_column[("holds", "usage_type")] == KIND_NAMES
    assert by_column[("rate_card_rates", "rate_key")] == set(RATE_KEYS)


def test_every_kind_and_rate_key_has_an_example() -> None:
    missing = [key for key in RATE_KEYS if key not in {e.rate_key for e in EXAMPLES}]
    assert not missing, f"add an example of {missing} to tests/support/usage_examples.py"
    assert {e.kind for e in EXAMPLES} == KIND_NAMES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.rate_key)
def test_each_example_meters_and_prices_as_written(example: Example) -> None:
    metering, unit_price, amount = price_with_rates(example.usage, DEFAULT_RATES_NANOS)
    assert (metering.rate_key, metering.billable_units, amount) == (
        example.rate_key,
        example.billable_units,
        example.amount_nanos,
    )
    assert kind_of(example.usage).unit == example.unit
    assert unit_price * example.billable_units == amount


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.rate_key)
def test_each_example_goes_to_the_wire_and_back(example: Example) -> None:
    v = Violations()
    parsed = parse_usage(v, usage_message(example.usage))
    assert not v.items
    assert parsed is not None and meter(parsed) == meter(example.usage)


async def test_the_dimensions_stored_in_columns_are_ones_the_schema_accepts(pool: asyncpg.Pool) -> None:
    # record_usage() stores a dimension named like a column of usage_records there too (record_usage.py
    # _dimension); a kind whose values the column's CHECK refuses would fail at the first RecordUsage.
    rows = await pool.fetch(
        """
        select pg_get_constraintdef(oid) as definition from pg_constraint
         where contype = 'c' and conrelid = 'usage_records'::regclass
        """
    )
    for kind in KINDS:
        for dimension in set(kind.dimensions) & {"direction", "number_type"}:
            allowed = next(
                _literals(r["definition"]) for r in rows if f"({dimension} = ANY" in r["definition"]
            )
            values = {str(v) for v in kind.dimension_enum(dimension)}
            assert values <= allowed, (
                f"{kind.name}.{dimension}: usage_records.{dimension} refuses {values - allowed}"
            )
