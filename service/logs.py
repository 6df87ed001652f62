"""structlog set-up: JSON lines when stderr is not a terminal, readable columns when it is.

Every line goes through `redact` last, as a safety net: no code should log a secret, but if some code
(ours or a library's exception text) ever does, the line still carries no Stripe key, webhook secret,
client secret, bearer token or payment-method object.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, WrappedLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

REDACTED = "[REDACTED]"

# Keys whose values are secrets whatever they look like (compared lower-cased, `-` read as `_`).
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "api_key",
        "apikey",
        "client_secret",
        "password",
        "passwd",
        "token",
        "access_token",
        "refresh_token",
        "x_api_key",
        "database_url",
        "dsn",
        "secret",
        "secret_key",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "webhook_secret",
        "stripe_signature",
        "cookie",
        "set_cookie",
    }
)

# Stripe objects logged whole would carry personal and card data.
_OBJECTS_KEPT_AS_ID = frozenset({"payment_method", "card", "setup_intent", "payment_intent", "customer"})

# Values that are secrets wherever they appear: in a field, a message or an exception's text.
_SECRET_PATTERNS = (
    # Stripe secret and restricted keys.
    (re.compile(r"\b([sr]k_(?:live|test)_)[A-Za-z0-9]+"), r"\1" + REDACTED),
    # Webhook signing secrets.
    (re.compile(r"\bwhsec_[A-Za-z0-9]+"), "whsec_" + REDACTED),
    # Our own API keys (service/app/api_keys.py).
    (re.compile(r"\bcbk_[A-Za-z0-9_-]+"), "cbk_" + REDACTED),
    # SetupIntent / PaymentIntent client secrets: `seti_123_secret_abc`; the intent id stays readable.
    (re.compile(r"\b((?:seti|pi)_[A-Za-z0-9]+_secret_)[A-Za-z0-9]+"), r"\1" + REDACTED),
    # A password inside a URL (a database URL in a connection error, say). The password may itself hold
    # an '@' (libpq takes the last one before the host), so the match runs to the last '@' before the
    # next space, slash or quote.
    (
        re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]+:)[^\s/\"']*@(?=[^@\s/\"']*(?:[\s/\"']|$))"),
        r"\1" + REDACTED + "@",
    ),
    # password=... in a URL's query (`?password=`) or a libpq key/value string (`password=x host=`),
    # quoted or not.
    (
        re.compile(r"\b(password|passwd|sslpassword)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;'\"]+)", re.IGNORECASE),
        r"\1\2" + REDACTED,
    ),
    # Bearer and basic credentials, e.g. an Authorization header quoted in an error.
    (re.compile(r"\b(Bearer|Basic)\s+[^\s\"',;]+", re.IGNORECASE), r"\1 " + REDACTED),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in _SECRET_KEYS


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth > 8:  # a pathological structure: say so rather than walk it
        return REDACTED
    if isinstance(value, Mapping):
        kind = value.get("object")
        if (isinstance(kind, str) and kind in _OBJECTS_KEPT_AS_ID) or "billing_details" in value:
            # A full payment-method (or card) object carries billing details and card data: keep its id.
            return {"object": kind, "id": value.get("id"), "redacted": True}
        return {k: REDACTED if _is_secret_key(k) else _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # gRPC metadata is a sequence of (key, value) pairs: an ("authorization", ...) pair is a secret.
        if len(value) == 2 and _is_secret_key(value[0]):
            return (value[0], REDACTED)
        return [_redact_value(item, depth + 1) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # Anything else (an exception, a Stripe object, a dataclass) is rendered through str(): scrub that.
    return redact_text(str(value))


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: drop secret values from every key and value of a line."""
    for key, value in list(event_dict.items()):
        try:
            event_dict[key] = REDACTED if _is_secret_key(key) else _redact_value(value)
        except Exception:  # a safety net must never cost the line: drop only the value it cannot read
            event_dict[key] = REDACTED
    return event_dict


class RedactingFilter(logging.Filter):
    """The same safety net for lines logged through the standard library (grpc, aiohttp, asyncio...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if record.exc_info:
            exc_text = logging.Formatter().formatException(record.exc_info)
            cleaned += "\n" + redact_text(exc_text)
            record.exc_info = None
            record.exc_text = None
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class LineWriter:
    """Writes each log line whole, in one write() on the stream's file descriptor.

    The workers of `serve --workers N` share one stderr. Through Python's buffered text layer a long
    line (a traceback) leaves in several writes, and a sibling's line can land in between; a single
    write() to an O_APPEND file or a terminal is not split. A stream with no descriptor (a StringIO
    in a test) is written and flushed as usual.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        try:
            self._fd: int | None = out.fileno()
        except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
            self._fd = None

    def write_line(self, line: str) -> None:
        with self._lock:
            if self._fd is None:
                self._out.write(line + "\n")
                self._out.flush()
                return
            self._out.flush()  # whatever the text layer still holds goes first, in order
            data = (line + "\n").encode("utf-8", "backslashreplace")
            while data:
                data = data[os.write(self._fd, data) :]


class _LineLogger:
    """A structlog logger (the methods structlog's PrintLogger has) over a LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write_line(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _LineHandler(logging.Handler):
    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write_line(self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's logging; `stream` defaults to stderr."""
    out = sys.stderr if stream is None else stream
    as_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    writer = LineWriter(out)
    logger = _LineLogger(writer)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,  # after format_exc_info, so a traceback's text is scrubbed too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: logger,
        # Not cached, so that structlog.testing.capture_logs() sees every logger in tests.
        cache_logger_on_first_use=False,
    )
    handler = _LineHandler(writer)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_billing", False):
            root.removeHandler(old)
    handler._billing = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(_LEVELS[level], logging.WARNING))
