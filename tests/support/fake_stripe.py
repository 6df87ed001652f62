"""A fake Stripe API server for tests: the real ``stripe`` library talks to it over loopback HTTP.

Use it as ``async with FakeStripe() as fake:`` and point the client at ``fake.url``
(``StripeProvider(api_key=fake.api_key, api_base=fake.url, webhook_secret=...)``).

What it models, as Stripe does it (v1, form-encoded requests, JSON responses):

* customers (create, retrieve, update ``invoice_settings[default_payment_method]``);
* SetupIntents (create, retrieve);
* PaymentMethods: Stripe's test tokens (``pm_card_visa``, ``pm_card_chargeDeclinedLostCard``...,
  see ``TEST_CARDS``) materialize as a new ``pm_...`` on attach, as in Stripe's test mode; retrieve,
  attach, detach;
* PaymentIntents: create (with ``confirm``/``off_session``), retrieve, list by customer (newest
  first, paginated), search by ``metadata['k']:'v'`` / ``customer:'cus_...'`` / ``status:'...'``;
  declines answer 402 with the PaymentIntent inside the error, as Stripe does;
* ``Idempotency-Key``: the same key and parameters replay the first answer (with
  ``Idempotent-Replayed: true``); the same key with other parameters -> 400 ``idempotency_error``;
  the same key while the first request is still running -> 409. Like Stripe, only answers from
  requests that ran are saved: success, 402 declines; not validation errors nor injected faults;
* events for PaymentIntent changes (``fake.events``) and signed webhook delivery.

Fault switches (each matches by method and path glob and fires ``times`` times, None = forever):
``fail_requests`` (HTTP 500/409/429... with optional ``Stripe-Should-Retry``), ``drop_connection``
(before or after the request took effect), ``delay_responses``, ``program_charge`` (the next
charges decline / need authentication / stay processing), ``reject_attach``. State is plain
dicts (``fake.payment_intents`` etc.) and every request is logged in ``fake.requests``.

Loopback only; one instance per test (or per module) keeps tests independent.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

JSON = dict[str, Any]

DEFAULT_API_KEY = "sk_test_fake_stripe"
DEFAULT_WEBHOOK_SECRET = "whsec_fake_stripe"
MIN_CHARGE_CENTS = 50  # Stripe's minimum for USD


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    # How a charge on it goes unless a test programs something else.
    outcome: ChargeOutcome
    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class ChargeOutcome:
    """What the next confirmation of a PaymentIntent does."""

    kind: Literal["succeeded", "declined", "requires_action", "processing"]
    code: str | None = None
    decline_code: str | None = None
    advice_code: str | None = None
    message: str | None = None

    @classmethod
    def succeeded(cls) -> ChargeOutcome:
        return cls("succeeded")

    @classmethod
    def processing(cls) -> ChargeOutcome:
        return cls("processing")

    @classmethod
    def requires_action(cls) -> ChargeOutcome:
        return cls(
            "requires_action",
            code="authentication_required",
            decline_code="authentication_required",
            message="Your card was declined. This transaction requires authentication.",
        )

    @classmethod
    def declined(
        cls,
        decline_code: str,
        *,
        code: str = "card_declined",
        advice_code: str | None = None,
        message: str | None = None,
    ) -> ChargeOutcome:
        default_message = {
            "insufficient_funds": "Your card has insufficient funds.",
            "expired_card": "Your card has expired.",
            "incorrect_cvc": "Your card's security code is incorrect.",
            "processing_error": "An error occurred while processing your card. Try again in a little bit.",
        }.get(decline_code, "Your card was declined.")
        return cls("declined", code, decline_code, advice_code, message or default_message)


TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242", ChargeOutcome.succeeded()),
    "pm_card_mastercard": TestCard("mastercard", "4444", ChargeOutcome.succeeded()),
    "pm_card_amex": TestCard("amex", "8431", ChargeOutcome.succeeded()),
    "pm_card_chargeDeclined": TestCard("visa", "0002", ChargeOutcome.declined("generic_decline")),
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", ChargeOutcome.declined("generic_decline")),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", ChargeOutcome.declined("insufficient_funds")
    ),
    "pm_card_chargeDeclinedLostCard": TestCard("visa", "9987", ChargeOutcome.declined("lost_card")),
    "pm_card_chargeDeclinedStolenCard": TestCard("visa", "9979", ChargeOutcome.declined("stolen_card")),
    "pm_card_chargeDeclinedFraudulent": TestCard("visa", "0019", ChargeOutcome.declined("fraudulent")),
    "pm_card_chargeDeclinedExpiredCard": TestCard(
        "visa", "0069", ChargeOutcome.declined("expired_card", code="expired_card")
    ),
    "pm_card_chargeDeclinedIncorrectCvc": TestCard(
        "visa", "0127", ChargeOutcome.declined("incorrect_cvc", code="incorrect_cvc")
    ),
    "pm_card_chargeDeclinedProcessingError": TestCard(
        "visa", "0119", ChargeOutcome.declined("processing_error", code="processing_error")
    ),
    "pm_card_chargeDeclinedVelocityLimitExceeded": TestCard(
        "visa", "6975", ChargeOutcome.declined("card_velocity_exceeded")
    ),
    "pm_card_authenticationRequired": TestCard("visa", "3184", ChargeOutcome.requires_action()),
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    idempotency_key: str | None
    params: JSON
    stripe_version: str | None
    status: int | None = None  # None: the connection was dropped without an answer
    replayed: bool = False


@dataclass
class _Fault:
    action: Literal["error", "drop_before", "drop_after", "delay"]
    method: str | None
    path: str | None
    remaining: int | None
    status: int = 500
    should_retry: bool | None = None
    error_type: str = "api_error"
    code: str | None = None
    message: str = ""
    delay_s: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining != 0
            and (self.method is None or self.method == method)
            and (self.path is None or fnmatch.fnmatchcase(path, self.path))
        )


@dataclass
class _ChargeRule:
    outcome: ChargeOutcome
    payment_method: str | None
    customer: str | None
    remaining: int | None


@dataclass
class _Saved:
    signature: tuple[str, str, str]  # method, path, canonical params
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class StripeHTTPError(Exception):
    """Raised inside handlers: becomes a Stripe-shaped error response."""

    def __init__(self, status: int, error: JSON) -> None:
        super().__init__(error.get("message"))
        self.status = status
        self.error = error


def _invalid(
    message: str, *, param: str | None = None, code: str | None = None, status: int = 400
) -> StripeHTTPError:
    error: JSON = {"type": "invalid_request_error", "message": message}
    if param:
        error["param"] = param
    if code:
        error["code"] = code
    return StripeHTTPError(status, error)


def _missing(kind: str, object_id: str, param: str = "id") -> StripeHTTPError:
    return _invalid(f"No such {kind}: '{object_id}'", param=param, code="resource_missing", status=404)


def parse_form(pairs: list[tuple[str, str]]) -> JSON:
    """Stripe's bracket encoding -> nested dicts/lists: ``metadata[k]=v``, ``expand[0]=x``, ``a[]=y``."""
    root: JSON = {}
    for raw_key, value in pairs:
        parts = re.findall(r"^[^\[]+|\[([^\]]*)\]", raw_key)
        name = raw_key.split("[", 1)[0]
        subkeys = parts[1:] if parts else []
        node: Any = root
        keys = [name, *subkeys]
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if key == "":  # "a[]": append
                key = str(len(node))
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
    listified: JSON = _listify(root)
    return listified


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return node


def _bool(value: Any) -> bool:
    return value in (True, "true", "True", "1")


class FakeStripe:
    """See the module docstring. Attributes are meant to be read by tests."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self.url = ""
        self.customers: dict[str, JSON] = {}
        self.setup_intents: dict[str, JSON] = {}
        self.payment_methods: dict[str, JSON] = {}
        self.payment_intents: dict[str, JSON] = {}  # insertion order = creation order
        self.events: list[JSON] = []
        self.requests: list[RecordedRequest] = []
        self._pm_outcome: dict[str, ChargeOutcome] = {}  # materialized pm id -> its card's outcome
        self._detached: set[str] = set()
        self._faults: list[_Fault] = []
        self._charge_rules: list[_ChargeRule] = []
        self._attach_rejections: dict[str, JSON] = {}
        self._saved: dict[str, _Saved] = {}
        self._in_flight: set[str] = set()
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gave up (timeout test) must not keep a delayed
        # handler alive; short shutdown so a test never waits for one either.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeStripe:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- fault switches --------------------------------------------------------------------------

    def fail_requests(
        self,
        status: int,
        *,
        method: str | None = "POST",
        path: str | None = None,
        times: int | None = 1,
        should_retry: bool | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer matching requests with an HTTP error before they take effect (nothing is saved)."""
        error_type, default_code, default_message = {
            409: (
                "idempotency_error",
                "idempotency_key_in_use",
                "There is currently another in-progress request using this idempotency key.",
            ),
            429: ("invalid_request_error", "rate_limit", "Too many requests hit the API too quickly."),
        }.get(status, ("api_error", None, "Something went wrong on Stripe's end."))
        self._faults.append(
            _Fault(
                "error",
                method,
                path,
                times,
                status=status,
                should_retry=should_retry,
                error_type=error_type,
                code=code or default_code,
                message=message or default_message,
            )
        )

    def drop_connection(
        self,
        *,
        after_commit: bool = True,
        method: str | None = "POST",
        path: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Close the TCP connection without answering; after_commit: the request took effect first
        (and its answer is saved for an idempotent retry), as when a response is lost in transit."""
        self._faults.append(_Fault("drop_after" if after_commit else "drop_before", method, path, times))

    def delay_responses(
        self, delay_s: float, *, method: str | None = None, path: str | None = None, times: int | None = 1
    ) -> None:
        """Hold the answer of matching requests for delay_s, after they took effect."""
        self._faults.append(_Fault("delay", method, path, times, delay_s=delay_s))

    def program_charge(
        self,
        outcome: ChargeOutcome,
        *,
        payment_method: str | None = None,
        customer: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Override how the next matching PaymentIntent confirmations go (default: the card's own).

        payment_method is the attached id (``CardDetails.payment_method_id``), not the test token.
        Rules are tried in the order they were added; ``times=None`` keeps one for good."""
        self._charge_rules.append(_ChargeRule(outcome, payment_method, customer, times))

    def reject_attach(
        self,
        payment_method: str,
        *,
        code: str = "card_declined",
        decline_code: str | None = "generic_decline",
        message: str = "Your card was declined.",
    ) -> None:
        """Attaching this payment method (the id given to attach, e.g. a test token) fails with a
        402 card_error, like a card the issuer refuses to verify. Stays until clear_faults()."""
        error: JSON = {"type": "card_error", "code": code, "message": message, "param": "payment_method"}
        if decline_code:
            error["decline_code"] = decline_code
        self._attach_rejections[payment_method] = error

    def clear_faults(self) -> None:
        self._faults.clear()
        self._charge_rules.clear()
        self._attach_rejections.clear()

    # ---- inspection ------------------------------------------------------------------------------

    def payment_intents_for(self, customer: str | None = None) -> list[JSON]:
        return [pi for pi in self.payment_intents.values() if customer is None or pi["customer"] == customer]

    def posts(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def events_of_type(self, event_type: str) -> list[JSON]:
        return [e for e in self.events if e["type"] == event_type]

    # ---- moving asynchronous payments on -------------------------------------------------------

    def settle_payment_intent(self, payment_intent_id: str, outcome: ChargeOutcome) -> JSON:
        """Finish a ``processing`` PaymentIntent (as the bank eventually does); returns the event."""
        pi = self.payment_intents[payment_intent_id]
        if pi["status"] != "processing":
            raise ValueError(f"{payment_intent_id} is {pi['status']}, not processing")
        return self._apply_outcome(pi, outcome)

    def complete_authentication(self, payment_intent_id: str) -> JSON:
        """The cardholder completes 3-D Secure on a ``requires_action`` PaymentIntent, late, as
        Stripe's hosted page or an email link allows: it succeeds. Returns the event."""
        pi = self.payment_intents[payment_intent_id]
        if pi["status"] != "requires_action":
            raise ValueError(f"{payment_intent_id} is {pi['status']}, not requires_action")
        return self._apply_outcome(pi, ChargeOutcome.succeeded())

    # ---- webhooks --------------------------------------------------------------------------------

    def make_event(self, event_type: str, obj: JSON) -> JSON:
        event = {
            "id": self._id("evt"),
            "object": "event",
            "api_version": None,
            "created": int(time.time()),
            "type": event_type,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": copy.deepcopy(obj)},
        }
        self.events.append(event)
        return event

    @staticmethod
    def sign(payload: bytes, secret: str, *, timestamp_s: int | None = None) -> str:
        """A ``Stripe-Signature`` header value: t=<unix s>,v1=HMAC-SHA256(secret, "<t>.<payload>")."""
        t = int(time.time()) if timestamp_s is None else timestamp_s
        mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    def signed_webhook(
        self,
        event: JSON,
        secret: str = DEFAULT_WEBHOOK_SECRET,
        *,
        wrong_secret: bool = False,
        stale_by_s: int = 0,
        tamper: bool = False,
    ) -> tuple[bytes, str]:
        """(body, Stripe-Signature header) for an event, optionally broken in one of three ways."""
        payload = json.dumps(event, indent=2).encode()
        header = self.sign(
            payload,
            secret + "-wrong" if wrong_secret else secret,
            timestamp_s=int(time.time()) - stale_by_s,
        )
        if tamper:  # same signature, altered body (an attacker raising the amount)
            altered = copy.deepcopy(event)
            obj = altered["data"]["object"]
            obj["amount"] = int(obj.get("amount") or 0) + 100_000
            payload = json.dumps(altered, indent=2).encode()
        return payload, header

    async def send_webhook(
        self,
        url: str,
        event: JSON,
        secret: str = DEFAULT_WEBHOOK_SECRET,
        *,
        wrong_secret: bool = False,
        stale_by_s: int = 0,
        tamper: bool = False,
        timeout_s: float = 10.0,
    ) -> int:
        """POST the event, signed, to url (loopback); returns the receiver's HTTP status."""
        payload, header = self.signed_webhook(
            event, secret, wrong_secret=wrong_secret, stale_by_s=stale_by_s, tamper=tamper
        )
        headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(url, data=payload, headers=headers) as response,
        ):
            await response.read()
            return response.status

    # ---- HTTP plumbing ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        if method == "POST":
            params = parse_form(parse_qsl(await request.text(), keep_blank_values=True))
        else:
            params = parse_form(list(request.query.items()))
        key = request.headers.get("Idempotency-Key")
        record = RecordedRequest(method, path, key, params, request.headers.get("Stripe-Version"))
        self.requests.append(record)

        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            # Like Stripe, show only the end of the key that was sent.
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            error = {
                "type": "invalid_request_error",
                "message": f"Invalid API Key provided: sk_test_****{sent[-4:]}",
            }
            return self._answer(record, 401, {"error": error})

        fault = self._take_fault(method, path, ("error", "drop_before"))
        if fault is not None and fault.action == "drop_before":
            return self._drop(request, record)
        if fault is not None:
            headers = (
                {} if fault.should_retry is None else {"Stripe-Should-Retry": str(fault.should_retry).lower()}
            )
            error = {"type": fault.error_type, "message": fault.message}
            if fault.code:
                error["code"] = fault.code
            return self._answer(record, fault.status, {"error": error}, headers)

        signature = ("", "", "")
        if method == "POST" and key:
            signature = (method, path, json.dumps(params, sort_keys=True))
            # Until the first request has answered (a delayed answer included) Stripe says 409.
            if key in self._in_flight:
                error = {
                    "type": "idempotency_error",
                    "code": "idempotency_key_in_use",
                    "message": "There is currently another in-progress request using this idempotency key.",
                }
                return self._answer(record, 409, {"error": error})
            saved = self._saved.get(key)
            if saved is not None and saved.signature != signature:
                error = {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same parameters they "
                    f"were first used with. Try using a key other than '{key}' if you meant to execute "
                    "a different request.",
                }
                return self._answer(record, 400, {"error": error})
            if saved is not None:
                record.replayed = True
                return self._answer_raw(
                    record, saved.status, saved.body, {**saved.headers, "Idempotent-Replayed": "true"}
                )
            self._in_flight.add(key)
        try:
            status, body = self._dispatch(method, path, params, key)
            encoded = json.dumps(body, indent=2).encode()
            # Like Stripe: keep the answer of a request that ran (success or card decline), not
            # of one refused up front, which may be corrected and sent again with the same key.
            if method == "POST" and key and (status < 400 or status == 402):
                self._saved[key] = _Saved(signature, status, encoded, {"Idempotency-Key": key})
            if self._take_fault(method, path, ("drop_after",)) is not None:
                return self._drop(request, record)
            delay = self._take_fault(method, path, ("delay",))
            if delay is not None:
                await asyncio.sleep(delay.delay_s)
            headers = {"Idempotency-Key": key} if key else {}
            return self._answer_raw(record, status, encoded, headers)
        finally:
            if key:
                self._in_flight.discard(key)

    def _take_fault(self, method: str, path: str, actions: tuple[str, ...]) -> _Fault | None:
        for fault in self._faults:
            if fault.action in actions and fault.matches(method, path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def _drop(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        record.status = None
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never reaches the client

    def _answer(
        self, record: RecordedRequest, status: int, body: JSON, headers: dict[str, str] | None = None
    ) -> web.Response:
        return self._answer_raw(record, status, json.dumps(body, indent=2).encode(), headers or {})

    def _answer_raw(
        self, record: RecordedRequest, status: int, body: bytes, headers: dict[str, str]
    ) -> web.Response:
        record.status = status
        return web.Response(
            status=status,
            body=body,
            content_type="application/json",
            headers={"Request-Id": self._id("req"), **headers},
        )

    def _dispatch(self, method: str, path: str, params: JSON, key: str | None) -> tuple[int, JSON]:
        parts = path.strip("/").split("/")
        routes: list[tuple[str, str, Callable[..., JSON]]] = [
            ("POST", "v1/customers", self._create_customer),
            ("GET", "v1/customers/*", self._get_customer),
            ("POST", "v1/customers/*", self._update_customer),
            ("POST", "v1/setup_intents", self._create_setup_intent),
            ("GET", "v1/setup_intents/*", self._get_setup_intent),
            ("GET", "v1/payment_methods/*", self._get_payment_method),
            ("POST", "v1/payment_methods/*/attach", self._attach),
            ("POST", "v1/payment_methods/*/detach", self._detach),
            ("GET", "v1/payment_intents/search", self._search_payment_intents),
            ("GET", "v1/payment_intents", self._list_payment_intents),
            ("POST", "v1/payment_intents", self._create_payment_intent),
            ("GET", "v1/payment_intents/*", self._get_payment_intent),
            ("POST", "v1/payment_intents/*/cancel", self._cancel_payment_intent),
        ]
        for route_method, pattern, handler in routes:
            pattern_parts = pattern.split("/")
            if route_method != method or len(pattern_parts) != len(parts):
                continue
            if all(p == "*" or p == s for p, s in zip(pattern_parts, parts, strict=True)):
                args = [s for p, s in zip(pattern_parts, parts, strict=True) if p == "*"]
                try:
                    return 200, handler(*args, params)
                except StripeHTTPError as e:
                    return e.status, {"error": e.error}
        return 404, {
            "error": {
                "type": "invalid_request_error",
                "message": f"Unrecognized request URL ({method}: {path}).",
            }
        }

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._seq):06d}{secrets.token_hex(4)}"

    # ---- customers and cards ---------------------------------------------------------------------

    def _create_customer(self, params: JSON) -> JSON:
        customer: JSON = {
            "id": self._id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "email": params.get("email"),
            "name": params.get("name"),
            "livemode": False,
            "metadata": dict(params.get("metadata") or {}),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            # The rest of Stripe's Customer (fixtures3.json), as a new test-mode customer has them.
            "address": None,
            "balance": 0,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "discount": None,
            "invoice_prefix": secrets.token_hex(4).upper(),
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.customers[customer["id"]] = customer
        return customer

    def _customer(self, customer_id: str, param: str = "id") -> JSON:
        customer = self.customers.get(customer_id)
        if customer is None:
            raise _missing("customer", customer_id, param)
        return customer

    def _get_customer(self, customer_id: str, params: JSON) -> JSON:
        return self._customer(customer_id)

    def _update_customer(self, customer_id: str, params: JSON) -> JSON:
        customer = self._customer(customer_id)
        settings = params.get("invoice_settings") or {}
        if "default_payment_method" in settings:
            pm_id = settings["default_payment_method"] or None
            if pm_id is not None:
                pm = self.payment_methods.get(pm_id)
                if pm is None or pm["customer"] != customer_id:
                    raise _invalid(
                        f"No such PaymentMethod: '{pm_id}'; It's possible this PaymentMethod exists on "
                        "one of your connected accounts, or is not attached to this customer.",
                        param="invoice_settings[default_payment_method]",
                        code="resource_missing",
                    )
            customer["invoice_settings"]["default_payment_method"] = pm_id
        if "metadata" in params:
            customer["metadata"].update(params["metadata"] or {})
        return customer

    def _create_setup_intent(self, params: JSON) -> JSON:
        if params.get("customer"):
            self._customer(params["customer"], "customer")
        setup_id = self._id("seti")
        intent = {
            "id": setup_id,
            "object": "setup_intent",
            "client_secret": f"{setup_id}_secret_{secrets.token_hex(12)}",
            "created": int(time.time()),
            "customer": params.get("customer"),
            "livemode": False,
            "metadata": dict(params.get("metadata") or {}),
            "payment_method": None,
            "payment_method_types": params.get("allowed_payment_method_types")
            or params.get("payment_method_types")
            or ["card"],
            "status": "requires_payment_method",
            "usage": params.get("usage", "off_session"),
            # The rest of Stripe's SetupIntent (fixtures3.json), as a new one has them.
            "application": None,
            "automatic_payment_methods": None,
            "cancellation_reason": None,
            "description": params.get("description"),
            "excluded_payment_method_types": None,
            "flow_directions": None,
            "last_setup_error": None,
            "latest_attempt": None,
            "mandate": None,
            "next_action": None,
            "on_behalf_of": None,
            "payment_method_configuration_details": None,
            "payment_method_options": {
                "card": {"mandate_options": None, "network": None, "request_three_d_secure": "automatic"}
            },
            "single_use_mandate": None,
        }
        self.setup_intents[setup_id] = intent
        return intent

    def _get_setup_intent(self, setup_id: str, params: JSON) -> JSON:
        intent = self.setup_intents.get(setup_id)
        if intent is None:
            raise _missing("setup_intent", setup_id)
        return intent

    def _payment_method(self, pm_id: str, param: str = "id") -> JSON:
        """An existing payment method, or a fresh one made from a test token (Stripe test mode)."""
        pm = self.payment_methods.get(pm_id)
        if pm is not None:
            return pm
        card = TEST_CARDS.get(pm_id)
        if card is None:
            raise _missing("PaymentMethod", pm_id, param)
        new_id = self._id("pm")
        pm = {
            "id": new_id,
            "object": "payment_method",
            "type": "card",
            "created": int(time.time()),
            "customer": None,
            "livemode": False,
            "metadata": {},
            "allow_redisplay": "unspecified",
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "card": {
                "brand": card.brand,
                "last4": card.last4,
                "exp_month": 12,
                "exp_year": time.gmtime().tm_year + 3,
                # Stripe's fingerprint identifies the card number, so it is the same for every
                # payment method made from the same test token.
                "fingerprint": hashlib.sha256(pm_id.encode()).hexdigest()[:16],
                "country": "US",
                "funding": "credit",
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "wallet": None,
                "display_brand": card.brand,
                "generated_from": None,
                "networks": {"available": [card.brand], "preferred": None},
                "regulated_status": "unregulated",
                "three_d_secure_usage": {"supported": True},
            },
            "customer_account": None,
        }
        self.payment_methods[new_id] = pm
        self._pm_outcome[new_id] = card.outcome
        return pm

    def _get_payment_method(self, pm_id: str, params: JSON) -> JSON:
        pm = self.payment_methods.get(pm_id)
        if pm is None:
            raise _missing("PaymentMethod", pm_id)
        return pm

    def _attach(self, pm_id: str, params: JSON) -> JSON:
        customer_id = params.get("customer")
        if not customer_id:
            raise _invalid("Missing required param: customer.", param="customer", code="parameter_missing")
        self._customer(customer_id, "customer")
        rejection = self._attach_rejections.get(pm_id)
        if rejection is not None:
            raise StripeHTTPError(402, dict(rejection))
        pm = self._payment_method(pm_id, "payment_method")
        if pm["id"] in self._detached:
            raise _invalid(
                "This PaymentMethod was previously used without being attached to a Customer or was "
                "detached from a Customer, and may not be used again.",
                code="payment_method_unexpected_state",
            )
        if pm["customer"] not in (None, customer_id):
            raise _invalid(
                "The payment method you provided has already been attached to a customer.",
                code="payment_method_unexpected_state",
            )
        pm["customer"] = customer_id
        return pm

    def _detach(self, pm_id: str, params: JSON) -> JSON:
        pm = self.payment_methods.get(pm_id)
        if pm is None:
            raise _missing("PaymentMethod", pm_id)
        if pm["customer"] is None:
            raise _invalid(
                "The payment method you provided is not attached to a customer so detachment is impossible.",
                code="payment_method_unexpected_state",
            )
        customer = self.customers.get(pm["customer"])
        if customer is not None and customer["invoice_settings"]["default_payment_method"] == pm_id:
            customer["invoice_settings"]["default_payment_method"] = None
        pm["customer"] = None
        self._detached.add(pm_id)  # Stripe: a detached payment method cannot be attached again
        return pm

    # ---- payment intents -------------------------------------------------------------------------

    def _create_payment_intent(self, params: JSON) -> JSON:
        try:
            amount = int(params.get("amount", ""))
        except ValueError:
            raise _invalid(
                "Missing required param: amount.", param="amount", code="parameter_missing"
            ) from None
        if amount < MIN_CHARGE_CENTS:
            raise _invalid("Amount must be at least $0.50 usd", param="amount", code="amount_too_small")
        currency = params.get("currency")
        if not currency:
            raise _invalid("Missing required param: currency.", param="currency", code="parameter_missing")
        customer_id = params.get("customer")
        if customer_id:
            self._customer(customer_id, "customer")
        pm_id = params.get("payment_method")
        pm = self._payment_method(pm_id, "payment_method") if pm_id else None
        if pm is not None and pm["id"] in self._detached:
            raise _invalid(
                "This PaymentMethod was previously used without being attached to a Customer or was "
                "detached from a Customer, and may not be used again.",
                param="payment_method",
                code="payment_method_unexpected_state",
            )
        if pm is not None and customer_id and pm["customer"] not in (None, customer_id):
            raise _invalid(
                f"The provided PaymentMethod {pm['id']} does not belong to the Customer {customer_id}.",
                param="payment_method",
            )
        confirm = _bool(params.get("confirm"))
        if confirm and pm is None:
            raise _invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                code="payment_intent_unexpected_state",
            )
        pi_id = self._id("pi")
        pi: JSON = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "capture_method": "automatic",
            "client_secret": f"{pi_id}_secret_{secrets.token_hex(12)}",
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": currency,
            "customer": customer_id,
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": dict(params.get("metadata") or {}),
            "next_action": None,
            "payment_method": pm["id"] if pm else None,
            "payment_method_types": params.get("allowed_payment_method_types")
            or params.get("payment_method_types")
            or ["card"],
            "setup_future_usage": params.get("setup_future_usage"),
            "status": "requires_confirmation" if pm else "requires_payment_method",
            # The rest of Stripe's PaymentIntent (fixtures3.json), as an off-session card charge has them.
            "amount_details": {"tip": {}},
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "customer_account": None,
            "excluded_payment_method_types": None,
            "managed_payments": {"enabled": False},
            "on_behalf_of": None,
            "payment_method_configuration_details": None,
            "payment_method_options": {
                "card": {
                    "installments": None,
                    "mandate_options": None,
                    "network": None,
                    "request_three_d_secure": "automatic",
                }
            },
            "processing": None,
            "receipt_email": params.get("receipt_email"),
            "review": None,
            "shipping": None,
            "source": None,
            "statement_descriptor": params.get("statement_descriptor"),
            "statement_descriptor_suffix": params.get("statement_descriptor_suffix"),
            "transfer_data": None,
            "transfer_group": None,
        }
        self.payment_intents[pi_id] = pi
        self.make_event("payment_intent.created", pi)
        if not confirm:
            return pi
        assert pm is not None
        outcome = self._next_outcome(pm["id"], customer_id)
        self._apply_outcome(pi, outcome)
        if outcome.kind == "declined" or (
            outcome.kind == "requires_action" and _bool(params.get("off_session"))
        ):
            # Stripe answers a failed confirmation with 402 and the PaymentIntent inside the error.
            error = dict(pi["last_payment_error"])
            error["payment_intent"] = copy.deepcopy(pi)
            raise StripeHTTPError(402, error)
        return pi

    def _next_outcome(self, pm_id: str, customer_id: str | None) -> ChargeOutcome:
        for rule in self._charge_rules:
            if rule.remaining == 0:
                continue
            if rule.payment_method not in (None, pm_id) or rule.customer not in (None, customer_id):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.outcome
        return self._pm_outcome.get(pm_id, ChargeOutcome.succeeded())

    def _apply_outcome(self, pi: JSON, outcome: ChargeOutcome) -> JSON:
        """Move a PaymentIntent as a confirmation with this outcome would; returns the event."""
        charge_id = self._id("ch")
        pi["latest_charge"] = charge_id
        if outcome.kind == "succeeded":
            pi.update(
                status="succeeded", amount_received=pi["amount"], last_payment_error=None, next_action=None
            )
            return self.make_event("payment_intent.succeeded", pi)
        if outcome.kind == "processing":
            pi.update(status="processing", next_action=None)
            return self.make_event("payment_intent.processing", pi)
        error: JSON = {
            "type": "card_error",
            "code": outcome.code,
            "decline_code": outcome.decline_code,
            "message": outcome.message,
            "param": None,
            "charge": charge_id,
            "doc_url": f"https://docs.stripe.com/error-codes/{outcome.code}",
            "payment_method": copy.deepcopy(self.payment_methods[pi["payment_method"]]),
        }
        if outcome.advice_code:
            error["advice_code"] = outcome.advice_code
        pi["last_payment_error"] = error
        if outcome.kind == "requires_action":
            pi.update(status="requires_action", next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}})
            return self.make_event("payment_intent.requires_action", pi)
        pi.update(status="requires_payment_method", next_action=None)
        return self.make_event("payment_intent.payment_failed", pi)

    def _cancel_payment_intent(self, pi_id: str, params: JSON) -> JSON:
        pi = self._get_payment_intent(pi_id, params)
        # Stripe's cancelable states; a card payment that is processing or done is not.
        if pi["status"] not in (
            "requires_payment_method", "requires_capture", "requires_confirmation", "requires_action"
        ):  # fmt: skip
            raise StripeHTTPError(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "payment_intent_unexpected_state",
                    "message": "You cannot cancel this PaymentIntent because it has a status of "
                    f"{pi['status']}. Only a PaymentIntent with one of the following statuses may be "
                    "canceled: requires_payment_method, requires_capture, requires_confirmation, "
                    "requires_action, processing.",
                    "payment_intent": copy.deepcopy(pi),
                },
            )
        pi.update(
            status="canceled",
            canceled_at=int(time.time()),
            cancellation_reason=params.get("cancellation_reason"),
            next_action=None,
        )
        self.make_event("payment_intent.canceled", pi)
        return pi

    def _get_payment_intent(self, pi_id: str, params: JSON) -> JSON:
        pi = self.payment_intents.get(pi_id)
        if pi is None:
            raise _missing("payment_intent", pi_id, "intent")
        return pi

    def _list_payment_intents(self, params: JSON) -> JSON:
        newest_first = list(reversed(self.payment_intents.values()))
        if params.get("customer"):
            newest_first = [pi for pi in newest_first if pi["customer"] == params["customer"]]
        after = params.get("starting_after")
        if after:
            ids = [pi["id"] for pi in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = max(1, min(100, int(params.get("limit", 10))))
        return {
            "object": "list",
            "url": "/v1/payment_intents",
            "has_more": len(newest_first) > limit,
            "data": newest_first[:limit],
        }

    def _search_payment_intents(self, params: JSON) -> JSON:
        """Stripe's search language, the subset: clauses ``field:'value'`` joined by AND."""
        query = params.get("query") or ""
        clauses = re.split(r"\s+AND\s+", query.strip())
        wanted: list[tuple[str | None, str, str]] = []  # (None or "metadata", field, value)
        for clause in clauses:
            m = re.fullmatch(r"""metadata\[['"](.+?)['"]\]:['"](.*)['"]""", clause)
            if m:
                wanted.append(("metadata", m[1], m[2]))
                continue
            m = re.fullmatch(r"""(customer|status|currency):['"](.*)['"]""", clause)
            if m:
                wanted.append((None, m[1], m[2]))
                continue
            raise _invalid(f"The search query is not supported by the fake: {clause!r}", param="query")

        def matches(pi: JSON) -> bool:
            return all((pi[where] if where else pi).get(name) == value for where, name, value in wanted)

        found = [pi for pi in reversed(self.payment_intents.values()) if matches(pi)]
        limit = max(1, min(100, int(params.get("limit", 10))))
        return {
            "object": "search_result",
            "url": "/v1/payment_intents/search",
            "has_more": len(found) > limit,
            "next_page": None,
            "data": found[:limit],
        }


async def start_fake_stripe(**kwargs: Any) -> FakeStripe:
    """For fixtures that cannot use ``async with``; call ``await fake.stop()`` when done."""
    fake = FakeStripe(**kwargs)
    await fake.start()
    return fake


__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_WEBHOOK_SECRET",
    "TEST_CARDS",
    "ChargeOutcome",
    "FakeStripe",
    "RecordedRequest",
    "parse_form",
    "start_fake_stripe",
]
