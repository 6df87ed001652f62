"""The payment-provider interface the rest of the service codes against.

Nothing outside ``service/payments`` imports ``stripe``: the service sees only the Protocol, the plain
result dataclasses and the exceptions defined here. Two implementations exist: ``StripeProvider``
(real money, ``stripe_provider.py``) and ``SandboxProvider`` (no network, ``sandbox_provider.py``).

Amounts at this boundary are integer US cents, because that is what card networks settle; the
conversion from the service's nano-USD happens in the caller, never here.

Error contract for every call (the caller's retry logic depends on it):

* a returned value is a definitive answer;
* ``OutcomeUnknown``: the provider could not be reached or answered with a transient failure
  (network error, timeout, HTTP 5xx, 409, 429). For a mutating call the effect MAY have happened.
  Retry the same call later with the SAME idempotency key; never with a new one;
* ``IdempotencyConflict``: the key was already used with different parameters. That is a bug in
  the caller; the first request may have taken effect;
* ``PaymentMethodRejected``: the card was refused while saving it (attach);
* ``PaymentProviderError`` (the base class) on its own: the provider refused the request outright
  (bad parameters, bad credentials, unknown object) and nothing happened.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class ChargeStatus(enum.Enum):
    SUCCEEDED = "succeeded"
    # Not final yet (bank debit in flight, or a state we do not expect for an automatic card charge):
    # do not credit the wallet, do not charge again; wait for the webhook or poll.
    PROCESSING = "processing"
    # The issuer wants the cardholder to authenticate (3-D Secure); an off-session charge cannot.
    REQUIRES_ACTION = "requires_action"
    # Retrying this card will not help: the customer must change or fix the card.
    HARD_DECLINE = "hard_decline"
    # The card may work later (funds, limits, issuer hiccup): a bounded retry schedule is sensible.
    SOFT_DECLINE = "soft_decline"


@dataclass(frozen=True, slots=True)
class CardDetails:
    """What the service may store about a card. Deliberately nothing more (no billing details)."""

    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str | None


# SetupIntent states in which it still waits for the customer's card: it may be handed out again.
OPEN_SETUP_INTENT_STATUSES = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action"}
)


@dataclass(frozen=True, slots=True)
class SetupIntent:
    setup_intent_id: str
    # The browser needs it to confirm the card; it must never reach a log, hence repr=False.
    client_secret: str = field(repr=False)
    status: str = "requires_payment_method"
    customer_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_SETUP_INTENT_STATUSES


@dataclass(frozen=True, slots=True)
class ChargeResult:
    # None only when the provider refused before creating a PaymentIntent.
    payment_intent_id: str | None
    status: ChargeStatus
    amount_cents: int | None = None
    decline_code: str | None = None
    # The provider's human-readable reason, fit to show to the customer.
    message: str | None = None
    # Who was charged, in what currency, in which mode, and the metadata we set: what a webhook is
    # checked against before it may credit anything (None when the provider did not say).
    customer_id: str | None = None
    currency: str | None = None
    livemode: bool | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # The sandbox provider's answers: no money moved, and the ledger says so.
    sandbox: bool = False


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    type: str
    created_at_s: int
    # The event's own mode (None when it did not say); it must match our key's.
    livemode: bool | None = None
    # The fields below are filled when the event's object is a PaymentIntent, else None / empty.
    payment_intent_id: str | None = None
    status: ChargeStatus | None = None
    amount_cents: int | None = None
    currency: str | None = None
    customer_id: str | None = None
    decline_code: str | None = None
    message: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def check_amount_cents(amount_cents: int) -> None:
    """Card amounts are positive whole cents; anything else is a bug in the caller, refused before sending."""
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise ValueError(f"amount_cents must be a positive int, got {amount_cents!r}")


class PaymentProviderError(Exception):
    """The provider refused the request; nothing happened. Base class of all errors here."""

    def __init__(self, message: str, *, code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


class OutcomeUnknown(PaymentProviderError):
    """Transient failure: the effect may or may not have happened. Retry with the same key."""


class IdempotencyConflict(PaymentProviderError):
    """The idempotency key was reused with different parameters (a caller bug)."""


class CredentialsRejected(PaymentProviderError):
    """The provider refused our credentials (API key): an operator problem, not the company's."""


class PaymentMethodRejected(PaymentProviderError):
    """The provider would not save this payment method; ``reason`` is fit to show to the customer."""

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(reason, code=code, request_id=request_id)
        self.reason = reason
        self.decline_code = decline_code


class InvalidWebhook(PaymentProviderError):
    """Bad signature, stale timestamp or unparsable body: answer the sender with HTTP 400."""


@runtime_checkable
class PaymentProvider(Protocol):
    async def create_customer(self, company_id: str, idempotency_key: str) -> str:
        """Create the provider-side customer for a company; returns its id."""
        ...

    async def create_setup_intent(self, customer_id: str, idempotency_key: str) -> SetupIntent:
        """Start saving a card for later off-session charges (usage=off_session)."""
        ...

    async def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        """A SetupIntent made before, with its status (and its client secret, for handing it out again)."""
        ...

    async def attach_payment_method(
        self, customer_id: str, payment_method_id: str, idempotency_key: str, *, make_default: bool = True
    ) -> CardDetails:
        """Attach the card and, unless ``make_default`` is False (a backup card), make it the customer's
        default.

        The returned ``payment_method_id`` is the one to store and charge: the provider may return a
        different id from the one given (Stripe's test tokens such as ``pm_card_visa`` do).
        """
        ...

    async def detach_payment_method(self, payment_method_id: str, idempotency_key: str) -> None: ...

    async def charge(
        self,
        customer_id: str,
        payment_method_id: str,
        amount_cents: int,
        idempotency_key: str,
        metadata: dict[str, str],
        description: str,
    ) -> ChargeResult:
        """Charge the saved card off-session, in USD. Declines are results, not exceptions."""
        ...

    async def retrieve_payment_intent(self, payment_intent_id: str) -> ChargeResult: ...

    async def cancel_payment_intent(self, payment_intent_id: str, idempotency_key: str) -> ChargeResult:
        """Cancel a PaymentIntent that has not been paid, so that it never can be; the PaymentIntent
        as it stands afterwards. One paid or being paid meanwhile (a cardholder who completed 3-D
        Secure after all) cannot be canceled: its state is returned as it is, and nothing changes."""
        ...

    async def find_payment_intent(
        self, customer_id: str, metadata_key: str, metadata_value: str
    ) -> ChargeResult | None:
        """The customer's PaymentIntent whose metadata[key] == value, newest first, or None.

        Read-after-write consistent (a PaymentIntent created a moment ago is found), so a None
        answer can be trusted by crash recovery. Still, re-sending the original charge with its
        idempotency key is the primary recovery path; this is for when that key is lost or expired.
        """
        ...

    def parse_webhook(self, payload: bytes, signature_header: str) -> WebhookEvent:
        """Verify the signature (and its age) and parse the event, or raise InvalidWebhook."""
        ...

    @property
    def livemode(self) -> bool:
        """Whether our credentials move real money (a live key); an event or PaymentIntent of the
        other mode is never ours to act on."""
        ...

    async def aclose(self) -> None:
        """Release connections; the provider is unusable afterwards."""
        ...
