"""The client against a fake server: metadata, deadlines, retries that keep their key, typed errors."""

from __future__ import annotations

import inspect
import random
from datetime import UTC, datetime

import grpc
import pytest
from conftest import fast_retry
from consofta.billing.client import (
    NO_RETRY,
    AlreadyExists,
    AsyncBillingClient,
    BillingClient,
    BillingError,
    DeadlineExceeded,
    FailedPrecondition,
    IdempotencyKeyReused,
    InsecureTokenError,
    Internal,
    InvalidArgument,
    NotFound,
    RetryEvent,
    RetryPolicy,
    TlsConfig,
    Unavailable,
    money,
    nanos_of,
    usage,
    usd_of,
)
from consofta.billing.client import _requests as rq
from consofta.billing.v1 import usage_pb2, usage_service_pb2
from fake_billing import (
    CERTS,
    EMAIL_NANOS,
    Fail,
    FakeBilling,
    LoseResponse,
    Stall,
    new_fake_billing,
    packed,
    serving,
)
from google.rpc import error_details_pb2

# -- metadata and deadlines -------------------------------------------------------------------------------


async def test_bearer_token_and_request_id_travel_as_metadata(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    await client.record_email("acme", 1, request_id="req-abc")
    await client.get_wallet("acme")
    with_id, without_id = fake.attempts
    assert with_id.metadata["authorization"] == "Bearer tok-123"
    assert with_id.metadata["x-request-id"] == "req-abc"
    assert without_id.metadata["authorization"] == "Bearer tok-123"
    assert "x-request-id" not in without_id.metadata


async def test_a_bearer_token_is_refused_on_a_plaintext_channel_unless_allowed(
    client_class: type[AsyncBillingClient], target: str, fake: FakeBilling
) -> None:
    with pytest.raises(InsecureTokenError, match="plaintext"):
        client_class(target, bearer_token="tok-123")
    assert fake.attempts == []
    async with client_class(target, bearer_token="tok-123", allow_insecure_token=True) as client:
        await client.get_wallet("acme")
    assert fake.attempts[0].metadata["authorization"] == "Bearer tok-123"


async def test_request_id_comes_from_the_provider_when_none_is_given(
    client_class: type[AsyncBillingClient], target: str, fake: FakeBilling
) -> None:
    async with client_class(target, request_id=lambda: "from-context") as client:
        await client.get_wallet("acme")
        await client.get_wallet("acme", request_id="explicit")
    assert [a.metadata.get("x-request-id") for a in fake.attempts] == ["from-context", "explicit"]
    assert "authorization" not in fake.attempts[0].metadata


async def test_every_call_has_a_deadline_of_5_s_unless_changed(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    await client.record_email("acme", 1)
    await client.get_wallet("acme", timeout_s=0.75)
    default, changed = (a.time_remaining_s for a in fake.attempts)
    # gRPC encodes the timeout on the wire rounded up, so the server may see a hair more than was set.
    assert default is not None and 4.0 < default <= 5.1
    assert changed is not None and 0.0 < changed <= 0.85


async def test_a_stalled_server_gives_deadline_exceeded_after_every_attempt(
    client_class: type[AsyncBillingClient], target: str, fake: FakeBilling
) -> None:
    fake.script = [Stall(), Stall(), Stall()]
    events: list[RetryEvent] = []
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.001, on_retry=events.append)
    async with client_class(target, retry=retry, timeout_s=0.2) as client:
        with pytest.raises(DeadlineExceeded) as caught:
            await client.record_email("acme", 1)
    assert caught.value.attempts == 3
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert [e.code for e in events] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
    assert [e.attempt for e in events] == [1, 2]
    assert events[0].method == "/consofta.billing.v1.UsageService/RecordUsage"
    keys = fake.keys()
    assert len(keys) == 3 and len(set(keys)) == 1


# -- retries keep the idempotency key ---------------------------------------------------------------------


async def test_retries_reuse_the_generated_key_and_debit_once(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    fake.script = [Fail(grpc.StatusCode.UNAVAILABLE), Fail(grpc.StatusCode.ABORTED)]
    reply = await client.record_email("acme", 2)
    keys = fake.keys()
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0]
    assert reply.usage_record.idempotency_key == keys[0]
    assert fake.balances_nanos["acme"] == -2 * EMAIL_NANOS


async def test_a_lost_response_is_retried_and_replayed_not_debited_twice(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    fake.script = [LoseResponse(grpc.StatusCode.UNAVAILABLE)]
    reply = await client.record_email("acme", 3, idempotency_key="batch-7")
    assert reply.replayed  # the first attempt did commit
    assert fake.keys() == ["batch-7", "batch-7"]
    assert fake.balances_nanos["acme"] == -3 * EMAIL_NANOS


async def test_each_call_gets_its_own_key(client: AsyncBillingClient, fake: FakeBilling) -> None:
    await client.record_email("acme", 1)
    await client.record_email("acme", 1)
    first, second = fake.keys()
    assert first != second
    assert fake.balances_nanos["acme"] == -2 * EMAIL_NANOS


async def test_create_wallet_retries_under_one_request_id(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    fake.script = [Fail(grpc.StatusCode.UNAVAILABLE)]
    reply = await client.create_wallet("globex", "Globex")
    assert reply.wallet.company_id == "globex"
    ids = fake.keys("CreateWallet")
    assert len(ids) == 2 and ids[0] == ids[1] and ids[0]


async def test_unavailable_gives_up_after_the_last_attempt(
    client_class: type[AsyncBillingClient], target: str, fake: FakeBilling
) -> None:
    fake.script = [Fail(grpc.StatusCode.UNAVAILABLE)] * 5
    async with client_class(target, retry=fast_retry(max_attempts=4)) as client:
        with pytest.raises(Unavailable) as caught:
            await client.get_wallet("acme")
    assert caught.value.attempts == 4
    assert len(fake.attempts) == 4


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INTERNAL]
)
async def test_other_codes_are_not_retried(
    client: AsyncBillingClient, fake: FakeBilling, code: grpc.StatusCode
) -> None:
    fake.script = [Fail(code)]
    with pytest.raises(BillingError) as caught:
        await client.record_email("acme", 1)
    assert caught.value.code is code and caught.value.attempts == 1
    assert len(fake.attempts) == 1


async def test_no_retry_policy_makes_one_attempt(
    client_class: type[AsyncBillingClient], target: str, fake: FakeBilling
) -> None:
    fake.script = [Fail(grpc.StatusCode.UNAVAILABLE)]
    async with client_class(target, retry=NO_RETRY) as client:
        with pytest.raises(Unavailable):
            await client.get_wallet("acme")
    assert len(fake.attempts) == 1


async def test_a_hand_built_request_gets_a_key_without_touching_the_callers(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    fake.script = [Fail(grpc.StatusCode.UNAVAILABLE)]
    request = usage_service_pb2.RecordUsageRequest(
        company_id="acme", usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=1))
    )
    reply = await client.record_usage(request)
    assert request.idempotency_key == ""
    assert fake.keys() == [reply.usage_record.idempotency_key] * 2


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.5, multiplier=2.0, rng=random.Random(7))
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [policy.delay_s(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not a fixed wait
        assert len(set(delays)) > 150
    assert policy.should_retry(grpc.StatusCode.UNAVAILABLE, 3)
    assert not policy.should_retry(grpc.StatusCode.UNAVAILABLE, 4)
    assert not policy.should_retry(grpc.StatusCode.NOT_FOUND, 1)


# -- errors -------------------------------------------------------------------------------------------------


async def test_invalid_argument_carries_the_field_violations(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="usage.email.count", description="must be >= 1"
            ),
            error_details_pb2.BadRequest.FieldViolation(field="idempotency_key", description="too long"),
        ]
    )
    info = error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="billing.consofta.com")
    fake.script = [Fail(grpc.StatusCode.INVALID_ARGUMENT, "bad", (packed(info), packed(bad)), "rid-9")]
    with pytest.raises(InvalidArgument) as caught:
        await client.record_email("acme", 0)
    error = caught.value
    assert error.field == "usage.email.count"
    assert error.fields == ("usage.email.count", "idempotency_key")
    assert error.field_violations[0].description == "must be >= 1"
    assert error.reason == "INVALID_ARGUMENT" and error.domain == "billing.consofta.com"
    assert error.request_id == "rid-9"
    assert error.message == "bad"


async def test_reused_key_is_its_own_type_under_already_exists(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    info = error_details_pb2.ErrorInfo(reason="IDEMPOTENCY_KEY_REUSED", metadata={"idempotency_key": "k"})
    fake.script = [Fail(grpc.StatusCode.ALREADY_EXISTS, "key reused", (packed(info),))]
    with pytest.raises(AlreadyExists) as caught:
        await client.record_email("acme", 1, idempotency_key="k")
    assert isinstance(caught.value, IdempotencyKeyReused)
    assert caught.value.metadata == {"idempotency_key": "k"}
    assert caught.value.code is grpc.StatusCode.ALREADY_EXISTS


async def test_not_found_and_failed_precondition_keep_reason_and_metadata(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    with pytest.raises(NotFound) as missing:
        await client.record_email("nobody", 1)
    assert missing.value.reason == "COMPANY_NOT_FOUND"
    assert missing.value.metadata == {"company_id": "nobody"}
    info = error_details_pb2.ErrorInfo(reason="INSUFFICIENT_FUNDS", metadata={"shortfall_nanos": "5"})
    fake.script = [Fail(grpc.StatusCode.FAILED_PRECONDITION, "not enough", (packed(info),))]
    with pytest.raises(FailedPrecondition) as failed:
        await client.get_wallet("acme")
    assert failed.value.reason == "INSUFFICIENT_FUNDS" and failed.value.metadata["shortfall_nanos"] == "5"


async def test_an_error_without_details_still_has_its_type(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    fake.script = [Fail(grpc.StatusCode.UNKNOWN, "boom")]
    with pytest.raises(Internal) as caught:
        await client.get_wallet("acme")
    assert caught.value.reason == "" and caught.value.field_violations == ()
    assert caught.value.code is grpc.StatusCode.UNKNOWN


# -- friendly values ----------------------------------------------------------------------------------------


async def test_enums_accept_names_and_proto_values(client: AsyncBillingClient, fake: FakeBilling) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await client.record_call("acme", "inbound", "toll_free", 61, occurred_at=when)
    await client.record_call("acme", usage_pb2.CALL_DIRECTION_OUTBOUND, usage_pb2.NUMBER_TYPE_LOCAL, 5)
    await client.record_sms("acme", "outbound", body="hi")
    await client.record_sms("acme", usage_pb2.SMS_DIRECTION_INBOUND, segments=2)
    requests = [a.request for a in fake.attempts]
    assert all(isinstance(r, usage_service_pb2.RecordUsageRequest) for r in requests)
    call, call2, sms, sms2 = (r for r in requests if isinstance(r, usage_service_pb2.RecordUsageRequest))
    assert call.usage.call == usage_pb2.CallUsage(
        direction=usage_pb2.CALL_DIRECTION_INBOUND,
        number_type=usage_pb2.NUMBER_TYPE_TOLL_FREE,
        duration_seconds=61,
    )
    assert call.occurred_at.ToDatetime(tzinfo=UTC) == when
    assert not call2.HasField("occurred_at")
    assert call2.usage.call.direction == usage_pb2.CALL_DIRECTION_OUTBOUND
    assert sms.usage.sms.body == "hi" and not sms.usage.sms.HasField("segments")
    assert sms2.usage.sms.segments == 2 and sms2.usage.sms.direction == usage_pb2.SMS_DIRECTION_INBOUND


async def test_bad_python_values_fail_before_sending(client: AsyncBillingClient, fake: FakeBilling) -> None:
    with pytest.raises(ValueError, match="direction"):
        await client.record_call("acme", "sideways", "local", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        await client.record_sms("acme", "outbound", body="x", segments=1)
    with pytest.raises(ValueError, match="timezone"):
        await client.record_email("acme", 1, occurred_at=datetime(2026, 1, 1))
    assert fake.attempts == []


async def test_record_builds_any_kind_of_usage_from_the_contract(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await client.record("acme", "email", count=3, idempotency_key="e-1", request_id="rec-1")
    await client.record(
        "acme", "call", direction="inbound", number_type="toll_free", duration_seconds=61, hold_id="h-1"
    )
    await client.record("acme", "sms", direction=usage_pb2.SMS_DIRECTION_INBOUND, body="hi", occurred_at=when)
    await client.record_call("acme", "inbound", "toll_free", 61, hold_id="h-1")
    requests = [a.request for a in fake.attempts]
    email, call, sms, typed_call = (
        r for r in requests if isinstance(r, usage_service_pb2.RecordUsageRequest)
    )
    assert email.usage == usage_pb2.Usage(email=usage_pb2.EmailUsage(count=3))
    assert email.idempotency_key == "e-1" and fake.attempts[0].metadata["x-request-id"] == "rec-1"
    assert call.usage == typed_call.usage == rq.call_usage("inbound", "toll_free", 61)
    assert call.hold_id == typed_call.hold_id == "h-1"
    assert call.idempotency_key and call.idempotency_key != typed_call.idempotency_key
    assert sms.usage.sms == usage_pb2.SmsUsage(direction=usage_pb2.SMS_DIRECTION_INBOUND, body="hi")
    assert sms.occurred_at.ToDatetime(tzinfo=UTC) == when


async def test_record_refuses_unknown_kinds_fields_and_enum_names_before_sending(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    with pytest.raises(ValueError, match=r"usage kind must be one of \[.*'email'.*\], got 'fax'"):
        await client.record("acme", "fax", pages=1)
    with pytest.raises(ValueError, match="call usage has no field 'seconds'"):
        await client.record("acme", "call", direction="inbound", number_type="local", seconds=61)
    with pytest.raises(
        ValueError, match=r"call.number_type must be one of \['local', 'toll_free'\], got 'mobile'"
    ):
        await client.record("acme", "call", direction="inbound", number_type="mobile", duration_seconds=1)
    with pytest.raises(ValueError, match=r"sms\.direction must be one of .* got 'unspecified'"):
        await client.record("acme", "sms", direction="unspecified", segments=1)
    assert fake.attempts == []


def test_every_kind_and_enum_value_of_the_contract_is_buildable_by_its_short_name() -> None:
    """Driven by the descriptors, so a usage type added to the proto is covered here with no new code."""
    kinds = {f.name: f.message_type for f in usage_pb2.Usage.DESCRIPTOR.fields if f.message_type}
    assert rq.usage_kinds() == list(kinds) and {"email", "call", "sms"} <= set(kinds)
    for kind, message in kinds.items():
        assert usage(kind).ListFields()[0][0].name == kind  # an empty kind is still that kind, for the server
        for field in message.fields:
            if field.enum_type is None:
                continue
            prefix = field.enum_type.values[0].name.removesuffix("UNSPECIFIED")
            for value in field.enum_type.values[1:]:
                short = value.name.removeprefix(prefix).lower()
                built = getattr(usage(kind, **{field.name: short}), kind)
                assert getattr(built, field.name) == value.number, (kind, field.name, short)
    number_type = usage_pb2.CallUsage.DESCRIPTOR.fields_by_name["number_type"].enum_type
    assert number_type is not None
    assert rq.enum_names(number_type) == {
        "local": usage_pb2.NUMBER_TYPE_LOCAL,
        "toll_free": usage_pb2.NUMBER_TYPE_TOLL_FREE,
    }


def test_money_helpers_are_exact() -> None:
    assert nanos_of(money(-1_675_000_000)) == -1_675_000_000
    assert money(-1_675_000_000).units == -1 and money(-1_675_000_000).nanos == -675_000_000
    assert str(usd_of(money(675_000))) == "0.000675000"


# -- a whole exchange, and TLS ------------------------------------------------------------------------------


async def test_a_lost_response_then_a_failure_keep_one_key_and_errors_decode(
    client: AsyncBillingClient, fake: FakeBilling
) -> None:
    fake.script = [LoseResponse(grpc.StatusCode.UNAVAILABLE), Fail(grpc.StatusCode.UNAVAILABLE)]
    reply = await client.record_email("acme", 4, request_id="lost-1")
    assert reply.replayed
    keys = fake.keys()
    assert len(keys) == 3 and len(set(keys)) == 1
    assert fake.balances_nanos["acme"] == -4 * EMAIL_NANOS
    assert {a.metadata["x-request-id"] for a in fake.attempts} == {"lost-1"}
    assert nanos_of((await client.get_wallet("acme")).wallet.balance) == -4 * EMAIL_NANOS
    with pytest.raises(NotFound):
        await client.record_call("nobody", "outbound", "local", 1)


async def test_a_stalled_call_without_retries_gives_deadline_exceeded(
    client_class: type[AsyncBillingClient], target: str, fake: FakeBilling
) -> None:
    fake.script = [Stall()]
    async with client_class(target, timeout_s=0.2, retry=NO_RETRY) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get_wallet("acme")


def test_the_blocking_client_is_a_blocking_twin_of_the_async_one(target: str, fake: FakeBilling) -> None:
    """The other tests reach BillingClient through a thread adapter; here it is called as its users do."""
    with BillingClient(target, timeout_s=0.2, retry=NO_RETRY) as client:
        reply = client.record_email("acme", 1)
        assert nanos_of(reply.balance_after) == -EMAIL_NANOS
        fake.script = [Stall()]
        with pytest.raises(DeadlineExceeded):
            client.get_wallet("acme")
    for name in ("call", "record", "record_usage", "record_email", "get_wallet", "close", "__enter__"):
        assert not inspect.iscoroutinefunction(getattr(BillingClient, name))
    assert not hasattr(BillingClient, "__aenter__")


async def test_mutual_tls_with_the_callers_certificate(client_class: type[AsyncBillingClient]) -> None:
    fake = new_fake_billing(balances_nanos={"acme": 0})
    mtls = TlsConfig.from_files(
        root_ca=CERTS / "ca.pem", client_cert=CERTS / "client.pem", client_key=CERTS / "client.key"
    )
    with serving(fake, tls=True) as address:
        address = address.replace("127.0.0.1", "localhost")
        async with client_class(address, tls=mtls, bearer_token="t") as client:
            reply = await client.record_email("acme", 1)
        assert nanos_of(reply.balance_after) == -EMAIL_NANOS
        # Without a client certificate the server refuses the handshake.
        server_only = TlsConfig.from_files(root_ca=CERTS / "ca.pem")
        async with client_class(address, tls=server_only, retry=NO_RETRY, timeout_s=2) as client:
            with pytest.raises(Unavailable):
                await client.get_wallet("acme")


def test_mutual_tls_needs_both_certificate_and_key() -> None:
    with pytest.raises(ValueError, match="both"):
        TlsConfig(client_cert_pem=b"x")
