"""Request ids and the canonical log line, on successful and failing RPCs of a real server."""

from __future__ import annotations

import re

import grpc
import pytest
import structlog
from consofta.billing.v1 import wallet_service_pb2

from tests.conftest import Stubs

pytestmark = pytest.mark.usefixtures("info_logs")  # the canonical line is logged at info

GENERATED = re.compile(r"^[0-9a-f]{32}$")


def _request_id(metadata: object) -> str | None:
    return dict(metadata or ()).get("x-request-id")  # type: ignore[call-overload]


async def test_given_request_id_comes_back_on_success_and_in_the_canonical_line(stubs: Stubs) -> None:
    company = await stubs.new_company()
    with structlog.testing.capture_logs() as logs:
        call = stubs.wallet.GetWallet(
            wallet_service_pb2.GetWalletRequest(company_id=company), metadata=(("x-request-id", "req-ok-1"),)
        )
        await call
        assert _request_id(await call.trailing_metadata()) == "req-ok-1"
    lines = [line for line in logs if line["event"] == "rpc"]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "/consofta.billing.v1.WalletService/GetWallet"
    assert line["code"] == "OK"
    assert line["company_id"] == company
    assert line["request_id"] == "req-ok-1"
    assert line["duration_ms"] >= 0


async def test_a_request_id_is_generated_when_none_is_given(stubs: Stubs) -> None:
    company = await stubs.new_company()
    with structlog.testing.capture_logs() as logs:
        call = stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=company))
        await call
        generated = _request_id(await call.trailing_metadata())
    assert generated is not None and GENERATED.match(generated)
    assert [line["request_id"] for line in logs if line["event"] == "rpc"] == [generated]


@pytest.mark.parametrize("given", ["req-err-1", None])
@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (wallet_service_pb2.GetWalletRequest(company_id="nobody"), grpc.StatusCode.NOT_FOUND),
        (wallet_service_pb2.GetWalletRequest(company_id="bad id!"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_request_id_comes_back_on_error_responses(
    stubs: Stubs, request_: wallet_service_pb2.GetWalletRequest, code: grpc.StatusCode, given: str | None
) -> None:
    metadata = (("x-request-id", given),) if given else None
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.wallet.GetWallet(request_, metadata=metadata)
    # The line is written before the error status is sent, so it is there as soon as the caller knows.
    lines = [line for line in logs if line["event"] == "rpc"]
    assert caught.value.code() == code
    returned = _request_id(caught.value.trailing_metadata())
    assert returned is not None
    if given:
        assert returned == given
    else:
        assert GENERATED.match(returned)
    assert [(line["code"], line["request_id"]) for line in lines] == [(code.name, returned)]


async def test_an_invalid_company_id_is_logged_as_a_short_prefix_never_whole(stubs: Stubs) -> None:
    huge = "x" * 1_000_000 + "\n"
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id=huge))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (line,) = [line for line in logs if line["event"] == "rpc"]
    assert line["company_id"] == "invalid:" + "x" * 32 + "…(1000001 chars)"
    assert all(len(repr(entry)) < 2_000 for entry in logs)
    # A control character in the prefix is escaped, so the line stays one line.
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError):
        await stubs.wallet.GetWallet(wallet_service_pb2.GetWalletRequest(company_id="a\nb"))
    (line,) = [line for line in logs if line["event"] == "rpc"]
    assert line["company_id"] == "invalid:a\\nb…(3 chars)"
