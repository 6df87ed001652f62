"""The hard/soft decline table (service/payments/declines.py)."""

from __future__ import annotations

import pytest

from service.payments.declines import (
    HARD_ADVICE_CODES,
    HARD_DECLINE_CODES,
    SOFT_ADVICE_CODES,
    SOFT_DECLINE_CODES,
    classify_decline,
)
from service.payments.provider import ChargeStatus

HARD, SOFT, ACTION = ChargeStatus.HARD_DECLINE, ChargeStatus.SOFT_DECLINE, ChargeStatus.REQUIRES_ACTION


def test_the_tables_do_not_overlap() -> None:
    assert not HARD_DECLINE_CODES & SOFT_DECLINE_CODES
    assert not HARD_ADVICE_CODES & SOFT_ADVICE_CODES


@pytest.mark.parametrize("decline_code", sorted(HARD_DECLINE_CODES))
def test_every_hard_code_is_hard(decline_code: str) -> None:
    assert classify_decline(code="card_declined", decline_code=decline_code) is HARD


@pytest.mark.parametrize("decline_code", sorted(SOFT_DECLINE_CODES))
def test_every_soft_code_is_soft(decline_code: str) -> None:
    assert classify_decline(code="card_declined", decline_code=decline_code) is SOFT


@pytest.mark.parametrize(
    ("code", "decline_code", "advice_code", "expected"),
    [
        ("authentication_required", None, None, ACTION),
        ("card_declined", "authentication_required", "do_not_try_again", ACTION),
        ("expired_card", None, None, HARD),  # reason only in `code`, as Stripe sends some errors
        ("card_declined", "insufficient_funds", "do_not_try_again", HARD),
        ("card_declined", "do_not_honor", "confirm_card_data", HARD),
        ("card_declined", "do_not_honor", "try_again_later", SOFT),
        ("card_declined", "a_code_stripe_adds_next_year", None, SOFT),
        ("card_declined", None, None, SOFT),
        (None, None, None, SOFT),
    ],
)
def test_precedence(
    code: str | None, decline_code: str | None, advice_code: str | None, expected: ChargeStatus
) -> None:
    assert classify_decline(code=code, decline_code=decline_code, advice_code=advice_code) is expected
