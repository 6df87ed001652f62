"""Domain errors: plain exceptions, mapped to gRPC status codes in one place (service/api/errors.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class BillingError(Exception):
    """Base of every error the service reports to its callers on purpose."""

    reason: str = "BILLING_ERROR"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


class InvalidArgument(BillingError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


class NotFound(BillingError):
    reason = "NOT_FOUND"


class CompanyNotFound(NotFound):
    reason = "COMPANY_NOT_FOUND"

    def __init__(self, company_id: str) -> None:
        super().__init__(f"company {company_id!r} has no wallet", metadata={"company_id": company_id})


class AlreadyExists(BillingError):
    reason = "ALREADY_EXISTS"


class IdempotencyKeyReused(AlreadyExists):
    """The same key was used before for a different request; nothing was changed."""

    reason = "IDEMPOTENCY_KEY_REUSED"


class CompanyExists(AlreadyExists):
    reason = "COMPANY_EXISTS"


class FailedPrecondition(BillingError):
    reason = "FAILED_PRECONDITION"


class ApprovalRequired(BillingError):
    """Raising a limit above the deployment's approval level needs a role the caller does not have."""

    reason = "APPROVAL_REQUIRED"


class NoRateCard(FailedPrecondition):
    reason = "NO_RATE_CARD"


class CardNotFound(NotFound):
    reason = "CARD_NOT_FOUND"

    def __init__(self, company_id: str) -> None:
        super().__init__(f"company {company_id!r} has no card on file", metadata={"company_id": company_id})


class CardRejected(FailedPrecondition):
    """The payment provider would not save the card; the message is the provider's reason."""

    reason = "CARD_REJECTED"


class PaymentProviderRefused(FailedPrecondition):
    """The payment provider refused a request outright; nothing happened there."""

    reason = "PAYMENT_PROVIDER_REFUSED"


class Aborted(BillingError):
    """A concurrent change got in the way; retrying the call can succeed."""

    reason = "ABORTED"


class Unavailable(BillingError):
    """The service or a dependency cannot serve this now (shutting down, the payment provider did not
    answer); retry later with the same request id."""

    reason = "UNAVAILABLE"


class PoolExhausted(Unavailable):
    """No database connection came free in time: the service is overloaded; retry with backoff."""

    reason = "DATABASE_POOL_EXHAUSTED"


class ResourceExhausted(BillingError):
    """A limit that keeps one caller from hurting the others was reached; retry later."""

    reason = "RESOURCE_EXHAUSTED"


class TooManyStreams(ResourceExhausted):
    reason = "TOO_MANY_STREAMS"


class TooManyConcurrentCalls(ResourceExhausted):
    reason = "TOO_MANY_CONCURRENT_CALLS"


class StreamFellBehind(Aborted):
    """The caller read an event stream more slowly than events arrived; it resumes from `cursor`."""

    reason = "EVENT_STREAM_FELL_BEHIND"

    def __init__(self, cursor: str) -> None:
        super().__init__(
            "the stream fell behind and was ended; reconnect with the cursor of the last event processed",
            metadata={"cursor": cursor},
        )


class DeadlineExceeded(BillingError):
    """The call's deadline (or the database's statement timeout) passed; nothing was committed."""

    reason = "DEADLINE_EXCEEDED"


class PaymentProviderUnavailable(Unavailable):
    reason = "PAYMENT_PROVIDER_UNAVAILABLE"


class HoldNotFound(NotFound):
    reason = "HOLD_NOT_FOUND"

    def __init__(self, company_id: str, hold_id: str) -> None:
        super().__init__(
            f"company {company_id!r} has no hold {hold_id!r}",
            metadata={"company_id": company_id, "hold_id": hold_id},
        )


class HoldAlreadyCaptured(FailedPrecondition):
    """A hold is captured once only; a second capture (or a release after the capture) is refused."""

    reason = "HOLD_ALREADY_CAPTURED"


class HoldReleased(FailedPrecondition):
    reason = "HOLD_RELEASED"


class AmountOutOfRange(InvalidArgument):
    """Quantity x unit price does not fit the 64-bit nano-USD amount (a card price gone wrong, or an
    absurd quantity): refused, nothing recorded."""

    reason = "AMOUNT_OUT_OF_RANGE"

    def __init__(self, field: str = "usage") -> None:
        super().__init__(
            [
                FieldViolation(
                    field, "prices to more than a 64-bit nano-USD amount can hold; nothing was recorded"
                )
            ]
        )
