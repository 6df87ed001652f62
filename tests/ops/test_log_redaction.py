"""No log line carries a Stripe key, a client secret, a bearer token or a payment-method object.

The lines are the real rendered output (JSON, as in production) of the service's own processor chain:
from real RPCs that carry secrets in their metadata and fields, and from direct log calls that put
secrets where careless code might (fields, nested objects, messages, exceptions, stdlib logging).
"""

from __future__ import annotations

import io
import json
import logging

import structlog
from consofta.billing.v1 import usage_pb2, usage_service_pb2, wallet_service_pb2

from service.logs import REDACTED, configure_logging, redact_text
from tests.conftest import Stubs

SECRET_KEY = "sk_live_" + "51HxYzAbCdEf0123456789"
TEST_KEY = "sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc"
RESTRICTED_KEY = "rk_live_" + "9f8e7d6c5b4a"
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SETUP_SECRET = "seti_1Mm8s8LkdIwHu7ix0OXBfTRG_secret_NXDsXo4RwvnXAvnXnPnSwgrxYNNqJ4e"
INTENT_SECRET = "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH"
BEARER = "Bearer " + "tok_" + "hidden0123456789"
CARD_NUMBER = "4242424242424242"
BILLING_EMAIL = "jenny.rosen@example.com"
EVERY_SECRET = (
    SECRET_KEY,
    TEST_KEY,
    RESTRICTED_KEY,
    WEBHOOK_SECRET,
    SETUP_SECRET,
    INTENT_SECRET,
    BEARER,
    "tok_hidden0123456789",
    CARD_NUMBER,
    BILLING_EMAIL,
    "hunter2",
)

PAYMENT_METHOD = {
    "id": "pm_1Q0PsIJvEtkwdCNYMSaVuRz6",
    "object": "payment_method",
    "billing_details": {"email": BILLING_EMAIL, "name": "Jenny Rosen"},
    "card": {"brand": "visa", "last4": "4242", "number": CARD_NUMBER, "exp_month": 8, "exp_year": 2030},
}


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def _assert_clean(text: str) -> None:
    leaked = [secret for secret in EVERY_SECRET if secret in text]
    assert not leaked, f"secrets in the log: {leaked}\n{text}"


async def test_real_rpcs_with_secrets_in_metadata_and_fields_log_none_of_them(stubs: Stubs) -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    try:
        metadata = (("authorization", BEARER), ("x-api-key", SECRET_KEY), ("x-request-id", "redaction-1"))
        # A company id that looks like a key (the id rules allow it) and an unknown one.
        company = await stubs.new_company(TEST_KEY)
        await stubs.usage.RecordUsage(
            usage_service_pb2.RecordUsageRequest(
                company_id=company,
                idempotency_key=INTENT_SECRET,
                usage=usage_pb2.Usage(email=usage_pb2.EmailUsage(count=3)),
            ),
            metadata=metadata,
        )
        for bad in (RESTRICTED_KEY, "x" * 100):
            try:
                await stubs.wallet.GetWallet(
                    wallet_service_pb2.GetWalletRequest(company_id=bad), metadata=metadata
                )
            except Exception:  # NOT_FOUND / INVALID_ARGUMENT: what matters here is the log
                pass
    finally:
        configure_logging("console", "warning")
    text = out.getvalue()
    _assert_clean(text)
    lines = _lines(out)
    rpc_lines = [line for line in lines if line.get("event") == "rpc"]
    assert len(rpc_lines) == 4, text  # CreateWallet, RecordUsage, 2 x GetWallet: the lines were captured
    assert {"sk_test_" + REDACTED, "rk_live_" + REDACTED} <= {
        str(line.get("company_id")) for line in rpc_lines
    }


def test_direct_log_calls_are_scrubbed_wherever_the_secret_sits() -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    log = structlog.get_logger("careless")
    try:
        log.info("calling stripe", authorization=BEARER, api_key=SECRET_KEY, client_secret=SETUP_SECRET)
        log.info(f"configured with {SECRET_KEY} and {WEBHOOK_SECRET}")
        log.info("intent", intent={"id": "pi_1", "client_secret": INTENT_SECRET, "nested": [INTENT_SECRET]})
        log.info("headers", headers=[("authorization", BEARER), ("stripe-signature", "t=1,v1=abc")])
        log.info("card saved", payment_method=PAYMENT_METHOD)
        log.info("event", data={"object": PAYMENT_METHOD})
        log.warning("db", error="cannot reach postgresql://billing:hunter2@db/billing", password="hunter2")
        try:
            raise RuntimeError(f"Invalid API Key provided: {SECRET_KEY} (header {BEARER})")
        except RuntimeError:
            log.exception("stripe call failed")
        logging.getLogger("some.library").error("retrying with key %s", RESTRICTED_KEY)
        try:
            raise ValueError(WEBHOOK_SECRET)
        except ValueError:
            logging.getLogger("some.library").exception("webhook failed")
    finally:
        configure_logging("console", "warning")
    text = out.getvalue()
    _assert_clean(text)
    lines = _lines(out)
    assert len(lines) == 8, text
    first = lines[0]
    assert (first["authorization"], first["api_key"], first["client_secret"]) == (REDACTED,) * 3
    card_line = next(line for line in lines if line["event"] == "card saved")
    assert card_line["payment_method"] == {
        "object": "payment_method",
        "id": PAYMENT_METHOD["id"],
        "redacted": True,
    }
    assert "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_" + REDACTED in redact_text(INTENT_SECRET)
    assert "retrying with key rk_live_" + REDACTED in text
    assert "postgresql://billing:" + REDACTED + "@db/billing" in text


def test_patterns_keep_what_is_not_secret() -> None:
    ordinary = "company acme: pm_123 charged 5.00 USD, intent pi_3Mtw, customer cus_9 (sk_ prefix alone)"
    assert redact_text(ordinary) == ordinary


def test_passwords_in_query_strings_libpq_strings_and_urls_with_an_at_sign_are_scrubbed() -> None:
    cases = {
        "postgresql://db.internal/billing?user=billing&password=hunter2&sslmode=require": (
            "postgresql://db.internal/billing?user=billing&password=" + REDACTED + "&sslmode=require"
        ),
        "could not connect: host=db dbname=billing password=hunter2 user=billing": (
            "could not connect: host=db dbname=billing password=" + REDACTED + " user=billing"
        ),
        "host=db password='hunter2 with spaces' user=billing": (
            "host=db password=" + REDACTED + " user=billing"
        ),
        "postgresql://billing:hun@ter2@db:5432/billing failed": (
            "postgresql://billing:" + REDACTED + "@db:5432/billing failed"
        ),
    }
    for raw, scrubbed in cases.items():
        assert redact_text(raw) == scrubbed
        assert "hunter2" not in redact_text(raw) and "ter2" not in redact_text(raw)


def test_values_under_token_api_key_and_database_url_keys_are_dropped() -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    try:
        structlog.get_logger("careless").info(
            "connecting",
            token="opaque-token-value",
            **{"x-api-key": "opaque-api-key", "DATABASE_URL": "postgresql://u@db/x?password=hunter2"},
            headers=[("x-api-key", "opaque-api-key")],
        )
    finally:
        configure_logging("console", "warning")
    (line,) = _lines(out)
    assert (line["token"], line["x-api-key"], line["DATABASE_URL"]) == (REDACTED,) * 3
    assert line["headers"] == [["x-api-key", REDACTED]]
    assert "opaque" not in out.getvalue() and "hunter2" not in out.getvalue()
