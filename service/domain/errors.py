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


class DatabaseUnavailable(Unavailable):
    """The database could not be reached, or the connection went away during the call. Whether a
    mutation was applied is unknown to the caller: retrying with the same key is safe."""

    reason = "DATABASE_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("the database is unavailable; retry with the same idempotency key")


class TransactionConflict(Aborted):
    """A concurrent transaction got in the way (serialization failure, deadlock); nothing was applied."""

    reason = "TRANSACTION_CONFLICT"

    def __init__(self) -> None:
        super().__init__("a concurrent change got in the way; nothing was applied, retry the call")


class ResourceExhausted(BillingError):
    """The service is at a bound it keeps on purpose (a full queue); retry later with the same key."""

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


class UsageQueueFull(ResourceExhausted):
    reason = "USAGE_QUEUE_FULL"

    def __init__(self, queued: int) -> None:
        super().__init__(
            f"{queued} usages are already waiting to be recorded; nothing was recorded. Retry later with "
            "the same idempotency key",
            metadata={"queued": str(queued)},
        )


class UsageNotRecorded(Unavailable):
    """A usage the service took but could not record (a database outage that outlasted the retries, a
    deadline that passed in the queue, a shutdown); nothing was recorded for it."""

    reason = "USAGE_NOT_RECORDED"


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


class UsageRecordNotFound(NotFound):
    reason = "USAGE_RECORD_NOT_FOUND"

    def __init__(self, company_id: str, usage_record_id: str) -> None:
        super().__init__(
            f"company {company_id!r} has no usage record {usage_record_id!r}",
            metadata={"company_id": company_id, "usage_record_id": usage_record_id},
        )


class VoidExceedsRecord(FailedPrecondition):
    """A void would return more than the usage record debited (counting its earlier voids)."""

    reason = "VOID_EXCEEDS_RECORD"


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


class Unauthenticated(BillingError):
    """No credentials, or ones that name no valid principal. The message never says which of unknown,
    revoked or expired a key was: that would tell a thief holding an old key what to try next."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(BillingError):
    """A known principal asked for something its role or company scope does not cover."""

    reason = "PERMISSION_DENIED"
