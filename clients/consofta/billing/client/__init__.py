"""A small, safe, typed client for the Consofta billing service.

    from consofta.billing.client import AsyncBillingClient, IdempotencyKeyReused

Deadlines are always set, retries never double-bill (a mutation's idempotency key is fixed before the
first attempt), and failures raise typed exceptions decoded from google.rpc.Status details. The
generated stubs live beside it in `consofta.billing.v1`.
"""

from consofta.billing.client._async import AsyncBillingClient
from consofta.billing.client._common import DEFAULT_TIMEOUT_S
from consofta.billing.client._requests import (
    CallDirection,
    NumberType,
    SmsDirection,
    new_key,
    usage,
    usage_kinds,
)
from consofta.billing.client._sync import BillingClient
from consofta.billing.client.auth import InsecureTokenError, TlsConfig
from consofta.billing.client.errors import (
    Aborted,
    AlreadyExists,
    BillingError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    IdempotencyKeyReused,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from consofta.billing.client.money import money, nanos_of, usd_of
from consofta.billing.client.retry import NO_RETRY, RETRYABLE_CODES, RetryEvent, RetryPolicy

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "NO_RETRY",
    "RETRYABLE_CODES",
    "Aborted",
    "AlreadyExists",
    "AsyncBillingClient",
    "BillingClient",
    "BillingError",
    "CallDirection",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "IdempotencyKeyReused",
    "InsecureTokenError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "NumberType",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryEvent",
    "RetryPolicy",
    "SmsDirection",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "money",
    "nanos_of",
    "new_key",
    "usage",
    "usage_kinds",
    "usd_of",
]
