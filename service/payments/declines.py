"""Which card declines are worth retrying: the table behind ChargeStatus.HARD_DECLINE / SOFT_DECLINE.

The vocabulary is Stripe's (https://docs.stripe.com/declines/codes and the ``advice_code`` field,
https://docs.stripe.com/declines/card#retrying-issuer-declines). The sandbox provider reuses it so
both providers decline the same way.

The question answered is the one auto-recharge asks: "should we try this same card again later,
or stop and ask the customer to act?". Order of precedence:

1. ``authentication_required`` (as ``code`` or ``decline_code``) -> REQUIRES_ACTION: only the
   cardholder, on-session, can complete 3-D Secure.
2. The issuer's ``advice_code`` when present, since it is advice about this very decline:
   ``do_not_try_again`` and ``confirm_card_data`` (the stored card data must be re-entered, which a
   retry cannot do) -> HARD; ``try_again_later`` -> SOFT.
3. The decline code, through the two tables below.
4. Anything else, including codes Stripe adds later -> SOFT. An unknown code must not switch off a
   company's recharges for good; the caller's retry schedule is bounded in any case (card networks
   penalise endless retries: Visa allows 15 per card in 30 days), and a run of soft declines ends
   in the same "please update your card" message.

``do_not_honor`` is SOFT on purpose: Stripe's next step for it is the same as for
``generic_decline`` (the customer contacts the issuer), and Visa files its response code 05 under
"generic" declines where retries are allowed, not under "issuer will never approve". When the issuer
does mean "never", it says so with advice_code ``do_not_try_again`` (rule 2).
"""

from __future__ import annotations

from .provider import ChargeStatus

AUTHENTICATION_REQUIRED = "authentication_required"

# The card as stored can never succeed (reported lost/stolen/fraud, closed, expired, wrong data,
# not allowed for this kind of payment): stop retrying and ask the customer for another card.
HARD_DECLINE_CODES: frozenset[str] = frozenset(
    {
        "lost_card",
        "stolen_card",
        "pickup_card",
        "fraudulent",
        "merchant_blacklist",
        "restricted_card",
        "security_violation",
        "expired_card",
        "incorrect_number",
        "invalid_number",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "incorrect_cvc",
        "invalid_cvc",
        "card_not_supported",
        "currency_not_supported",
        "invalid_account",
        "new_account_information_available",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "stop_payment_order",
        "transaction_not_allowed",
        "not_permitted",
        "service_not_allowed",
        "no_action_taken",
        "testmode_decline",
    }
)

# Temporary or balance-related: the same card may well work later. Listed for documentation and so
# a test can pin them; unlisted codes get the same answer (rule 4).
SOFT_DECLINE_CODES: frozenset[str] = frozenset(
    {
        "insufficient_funds",
        "generic_decline",
        "do_not_honor",
        "card_declined",
        "card_velocity_exceeded",
        "withdrawal_count_limit_exceeded",
        "try_again_later",
        "processing_error",
        "issuer_not_available",
        "reenter_transaction",
        "approve_with_id",
        "call_issuer",
        "duplicate_transaction",
    }
)

HARD_ADVICE_CODES: frozenset[str] = frozenset({"do_not_try_again", "confirm_card_data"})
SOFT_ADVICE_CODES: frozenset[str] = frozenset({"try_again_later"})


def classify_decline(
    *, code: str | None, decline_code: str | None, advice_code: str | None = None
) -> ChargeStatus:
    """Map a failed charge's error fields to REQUIRES_ACTION, HARD_DECLINE or SOFT_DECLINE."""
    if AUTHENTICATION_REQUIRED in (code, decline_code):
        return ChargeStatus.REQUIRES_ACTION
    if advice_code in HARD_ADVICE_CODES:
        return ChargeStatus.HARD_DECLINE
    if advice_code in SOFT_ADVICE_CODES:
        return ChargeStatus.SOFT_DECLINE
    # Stripe puts the specific reason in decline_code; some errors (expired_card, incorrect_cvc,
    # processing_error) also carry it in code, so both are consulted.
    for reason in (decline_code, code):
        if reason in HARD_DECLINE_CODES:
            return ChargeStatus.HARD_DECLINE
    return ChargeStatus.SOFT_DECLINE
