"""In-process PaymentProvider for running the service without a Stripe key: no network, no money.

It answers like Stripe's test mode for a handful of its documented test PaymentMethods, so the card
and auto-recharge flows can be tried end to end by a newcomer:

    pm_card_visa, pm_card_mastercard, pm_card_amex         charge succeeds
    pm_card_chargeDeclined, pm_card_chargeCustomerFail     soft decline (generic_decline)
    pm_card_chargeDeclinedInsufficientFunds                soft decline (insufficient_funds)
    pm_card_chargeDeclinedVelocityLimitExceeded            soft decline (card_velocity_exceeded)
    pm_card_chargeDeclinedProcessingError                  soft decline (processing_error)
    pm_card_chargeDeclinedLostCard / StolenCard            hard decline (lost_card / stolen_card)
    pm_card_chargeDeclinedExpiredCard / Fraudulent         hard decline (expired_card / fraudulent)
    pm_card_authenticationRequired                         requires action (3-D Secure)

Like Stripe, attaching a test token creates a new ``pm_...`` id, which is the one to charge. Any
other id is rejected on attach. Idempotency keys are honoured as Stripe does (same key and same
parameters -> the first answer, different parameters -> IdempotencyConflict) for 24 hours.

It is not a model of Stripe beyond this: charges settle at once, nothing is ever PROCESSING, and
no webhook is ever sent.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from .declines import classify_decline
from .provider import (
    CardDetails,
    ChargeResult,
    ChargeStatus,
    IdempotencyConflict,
    InvalidWebhook,
    PaymentMethodRejected,
    PaymentProviderError,
    SetupIntent,
    WebhookEvent,
    check_amount_cents,
)

IDEMPOTENCY_KEY_TTL_S = 24 * 3600  # Stripe keeps keys for at least 24 hours
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _TestCard:
    brand: str
    last4: str
    # None: the charge succeeds; otherwise (code, decline_code, message) of Stripe's card error.
    decline: tuple[str, str, str] | None = None


_DECLINED = "Your card was declined."
TEST_CARDS: dict[str, _TestCard] = {
    "pm_card_visa": _TestCard("visa", "4242"),
    "pm_card_mastercard": _TestCard("mastercard", "4444"),
    "pm_card_amex": _TestCard("amex", "8431"),
    "pm_card_chargeDeclined": _TestCard("visa", "0002", ("card_declined", "generic_decline", _DECLINED)),
    "pm_card_chargeCustomerFail": _TestCard("visa", "0341", ("card_declined", "generic_decline", _DECLINED)),
    "pm_card_chargeDeclinedInsufficientFunds": _TestCard(
        "visa", "9995", ("card_declined", "insufficient_funds", "Your card has insufficient funds.")
    ),
    "pm_card_chargeDeclinedVelocityLimitExceeded": _TestCard(
        "visa", "6975", ("card_declined", "card_velocity_exceeded", _DECLINED)
    ),
    "pm_card_chargeDeclinedProcessingError": _TestCard(
        "visa",
        "0119",
        ("processing_error", "processing_error", "An error occurred while processing your card."),
    ),
    "pm_card_chargeDeclinedLostCard": _TestCard("visa", "9987", ("card_declined", "lost_card", _DECLINED)),
    "pm_card_chargeDeclinedStolenCard": _TestCard(
        "visa", "9979", ("card_declined", "stolen_card", _DECLINED)
    ),
    "pm_card_chargeDeclinedExpiredCard": _TestCard(
        "visa", "0069", ("expired_card", "expired_card", "Your card has expired.")
    ),
    "pm_card_chargeDeclinedFraudulent": _TestCard("visa", "0019", ("card_declined", "fraudulent", _DECLINED)),
    "pm_card_authenticationRequired": _TestCard(
        "visa",
        "3184",
        (
            "authentication_required",
            "authentication_required",
            "Your card was declined. This transaction requires authentication.",
        ),
    ),
}


@dataclass(slots=True)
class _PaymentMethod:
    token: str  # the test token it was made from; decides how charges go
    card: CardDetails
    customer_id: str | None


@dataclass(slots=True)
class _PaymentIntent:
    customer_id: str
    metadata: dict[str, str]
    result: ChargeResult


@dataclass(slots=True)
class _Saved:
    request: tuple[object, ...]
    stored_at_s: float
    outcome: object | BaseException


class SandboxProvider:
    """Fake money, real behaviour for the cards above. Safe to share across tasks of one loop:
    no method awaits between reading and writing its state."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._run = secrets.token_hex(4)
        self._customers: dict[str, str] = {}  # id -> company_id
        self._methods: dict[str, _PaymentMethod] = {}
        self._setup_intents: dict[str, SetupIntent] = {}
        self._intents: dict[str, _PaymentIntent] = {}  # insertion order = creation order
        self._saved: OrderedDict[str, _Saved] = OrderedDict()  # idempotency key -> first outcome

    async def create_customer(self, company_id: str, idempotency_key: str) -> str:
        def run() -> str:
            customer_id = self._new_id("cus")
            self._customers[customer_id] = company_id
            return customer_id

        return self._idempotent(idempotency_key, ("customer", company_id), run)

    async def create_setup_intent(self, customer_id: str, idempotency_key: str) -> SetupIntent:
        def run() -> SetupIntent:
            self._require_customer(customer_id)
            setup_id = self._new_id("seti")
            intent = SetupIntent(
                setup_intent_id=setup_id, client_secret=f"{setup_id}_secret_sandbox", customer_id=customer_id
            )
            self._setup_intents[setup_id] = intent
            return intent

        return self._idempotent(idempotency_key, ("setup_intent", customer_id), run)

    async def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        intent = self._setup_intents.get(setup_intent_id)
        if intent is None:
            raise PaymentProviderError(f"No such SetupIntent: '{setup_intent_id}'", code="resource_missing")
        return intent

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, idempotency_key: str, *, make_default: bool = True
    ) -> CardDetails:
        # The sandbox keeps no default payment method: charges always name theirs.
        def run() -> CardDetails:
            self._require_customer(customer_id)
            test_card = TEST_CARDS.get(payment_method_id)
            if test_card is None:
                raise PaymentMethodRejected(
                    f"No such PaymentMethod: '{payment_method_id}'", code="resource_missing"
                )
            new_id = self._new_id("pm")
            card = CardDetails(
                payment_method_id=new_id,
                brand=test_card.brand,
                last4=test_card.last4,
                exp_month=12,
                exp_year=datetime.date.today().year + 3,
                fingerprint=hashlib.sha256(payment_method_id.encode()).hexdigest()[:16],
            )
            self._methods[new_id] = _PaymentMethod(payment_method_id, card, customer_id)
            return card

        request = ("attach", customer_id, payment_method_id)
        return self._idempotent(idempotency_key, request, run)

    async def detach_payment_method(self, payment_method_id: str, idempotency_key: str) -> None:
        def run() -> None:
            method = self._methods.get(payment_method_id)
            if method is None or method.customer_id is None:
                raise PaymentProviderError(
                    f"PaymentMethod {payment_method_id} is not attached to a customer",
                    code="payment_method_unexpected_state",
                )
            method.customer_id = None

        self._idempotent(idempotency_key, ("detach", payment_method_id), run)

    async def charge(
        self,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        idempotency_key: str,
        metadata: dict[str, str],
        description: str,
    ) -> ChargeResult:
        check_amount_cents(amount_cents)

        def run() -> ChargeResult:
            self._require_customer(customer_id)
            method = self._methods.get(payment_method_id)
            if method is None or method.customer_id != customer_id:
                raise PaymentProviderError(
                    f"PaymentMethod {payment_method_id} is not attached to customer {customer_id}",
                    code="resource_missing",
                )
            intent_id = self._new_id("pi")
            decline = TEST_CARDS[method.token].decline
            if decline is None:
                status, decline_code, message = ChargeStatus.SUCCEEDED, None, None
            else:
                code, decline_code, message = decline
                status = classify_decline(code=code, decline_code=decline_code)
            result = ChargeResult(
                intent_id,
                status,
                amount_cents,
                decline_code,
                message,
                customer_id=customer_id,
                currency="usd",
                livemode=False,
                metadata=dict(metadata),
                sandbox=True,
            )
            self._intents[intent_id] = _PaymentIntent(customer_id, dict(metadata), result)
            return result

        request = (
            "charge",
            customer_id,
            payment_method_id,
            amount_cents,
            tuple(sorted(metadata.items())),
            description,
        )
        return self._idempotent(idempotency_key, request, run)

    async def retrieve_payment_intent(self, payment_intent_id: str) -> ChargeResult:
        intent = self._intents.get(payment_intent_id)
        if intent is None:
            raise PaymentProviderError(
                f"No such PaymentIntent: '{payment_intent_id}'", code="resource_missing"
            )
        return intent.result

    async def cancel_payment_intent(self, payment_intent_id: str, idempotency_key: str) -> ChargeResult:
        def run() -> ChargeResult:
            intent = self._intents.get(payment_intent_id)
            if intent is None:
                raise PaymentProviderError(
                    f"No such PaymentIntent: '{payment_intent_id}'", code="resource_missing"
                )
            if intent.result.status is ChargeStatus.REQUIRES_ACTION:
                # Read back as Stripe's "canceled" is: final and unpaid.
                intent.result = dataclasses.replace(
                    intent.result, status=ChargeStatus.HARD_DECLINE, message="The payment was canceled."
                )
            return intent.result

        return self._idempotent(idempotency_key, ("cancel", payment_intent_id), run)

    async def find_payment_intent(
        self, customer_id: str, metadata_key: str, metadata_value: str
    ) -> ChargeResult | None:
        for intent in reversed(self._intents.values()):  # newest first, as Stripe lists
            if intent.customer_id == customer_id and intent.metadata.get(metadata_key) == metadata_value:
                return intent.result
        return None

    def parse_webhook(self, payload: bytes, signature_header: str) -> WebhookEvent:
        raise InvalidWebhook("the sandbox payment provider sends no webhooks")

    @property
    def livemode(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None

    def _new_id(self, prefix: str) -> str:
        # Unique across restarts too: a PaymentIntent id is a ledger reference, unique per credit.
        return f"{prefix}_sandbox_{next(self._ids)}_{self._run}"

    def _require_customer(self, customer_id: str) -> None:
        if customer_id not in self._customers:
            raise PaymentProviderError(f"No such customer: '{customer_id}'", code="resource_missing")

    def _idempotent(self, key: str, request: tuple[object, ...], run: Callable[[], T]) -> T:
        """Stripe's rule: the first outcome for a key is the answer for as long as the key lives."""
        if not key:
            raise ValueError("an idempotency key is required")
        now_s = time.monotonic()
        while self._saved:
            oldest = next(iter(self._saved.values()))
            if now_s - oldest.stored_at_s < IDEMPOTENCY_KEY_TTL_S:
                break
            self._saved.popitem(last=False)
        saved = self._saved.get(key)
        if saved is None:
            try:
                outcome: object | BaseException = run()
            except PaymentProviderError as e:
                outcome = e
            saved = self._saved[key] = _Saved(request, now_s, outcome)
        elif saved.request != request:
            raise IdempotencyConflict(
                "Keys for idempotent requests can only be used with the same parameters they were "
                "first used with."
            )
        if isinstance(saved.outcome, BaseException):
            raise saved.outcome
        return cast(T, saved.outcome)
