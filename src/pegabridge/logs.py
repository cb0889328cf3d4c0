"""Log lines: a static message, a stable ``event`` key and flat fields.

On a terminal the lines read as text; elsewhere each is one JSON object, so that a log
collector can search by ``event``, ``installation_id``, ``event_uuid`` or
``request_id``.

Every line written while an HTTP request is handled carries that request's
``request_id`` (see :class:`RequestIdMiddleware`); the same id is sent back in the
``X-Request-ID`` answer header, so that a person can find the lines of one request.

Secrets are kept out twice: a field whose name sounds secret is masked, and any text
that looks like a credential (an ``Authorization`` value, a pegabridge API key, the
password in a URL) is masked wherever it appears, in the message, the fields and
tracebacks.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# Attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET_WORDS = (
    "password",
    "passwd",
    "authorization",
    "secret",
    "token",
    "api_key",
    "apikey",
    "cookie",
    "credential",
)
_SECRET_TEXT = (
    # An Authorization header value: Basic, Bearer, Digest and the like.
    (re.compile(r"\b(Basic|Bearer|Digest|Token)\s+[A-Za-z0-9+/=._~-]{6,}"), r"\1 ***"),
    # A pegabridge API key (``pb_`` and 43 URL-safe characters).
    (re.compile(r"\bpb_[A-Za-z0-9_-]{16,}"), "pb_***"),
    # The user information of a URL (``scheme://user:password@host``).
    (re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@"), "***@"),
)
_REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "request_id", default=""
)
"""The id of the HTTP request being handled; empty outside a request."""


def scrub(text: str) -> str:
    """``text`` with anything that looks like a credential masked."""
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    """The ``extra`` fields of a record and the request id, secrets masked."""
    fields: dict[str, object] = {}
    current = request_id.get()
    if current:
        fields["request_id"] = current
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if any(word in key.lower() for word in _SECRET_WORDS):
            value = "***"
        fields[key] = _clean(value)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        document.update(fields_of(record))
        if record.exc_info:
            document["traceback"] = scrub(self.formatException(record.exc_info))
        return json.dumps(document, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A line a person reads: time, level, message, then ``key=value`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={v}" for k, v in fields_of(record).items())
        line = f"{stamp} {record.levelname:<7} {scrub(record.getMessage())}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{scrub(self.formatException(record.exc_info))}"
        return line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is logged.

    A handler that kept the stream of the moment it was made would write to a closed
    file once that stream is swapped and closed (a command run in-process, as tests do).
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        """The stream is always the current standard error; nothing to keep."""


def configure(level: str = "INFO", json_lines: bool | None = None) -> None:
    """Log to standard error: JSON lines, or text when a terminal reads them."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "aiosqlite", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- One id per HTTP request. ---

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_http_log = logging.getLogger("pegabridge.http")


def new_request_id() -> str:
    """A short random id; unique enough to find one request's lines."""
    return secrets.token_hex(8)


def _incoming_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == _REQUEST_ID_HEADER:
            text = bytes(value).decode("latin-1").strip()
            if _REQUEST_ID_OK.match(text):
                return text
    return new_request_id()


def _route_of(scope: Scope) -> str:
    """The route's pattern (``/t/o/{token}``) rather than the path with its tokens."""
    route = scope.get("route")
    pattern = getattr(route, "path", None) or getattr(route, "path_format", None)
    if isinstance(pattern, str):
        return pattern
    path = str(scope.get("path", ""))
    return "/".join(part if len(part) <= 24 else "…" for part in path.split("/"))


class RequestIdMiddleware:
    """Gives each HTTP request an id, logs one ``http.request`` line per request.

    The id is the caller's ``X-Request-ID`` when it is short and plain, else a new
    one. The line holds method, route pattern, status and duration: never the query
    string, headers or body, which may carry tokens or personal data.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        current = _incoming_id(scope)
        token = request_id.set(current)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((_REQUEST_ID_HEADER, current.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, status, started)
            request_id.reset(token)

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        path = _route_of(scope)
        if path in ("/metrics", "/healthz", "/readyz"):
            return
        # Successful requests are many (every open pixel): DEBUG; refusals and
        # failures are what an operator looks for: INFO and WARNING.
        level = logging.DEBUG
        if status >= 500:
            level = logging.WARNING
        elif status >= 400:
            level = logging.INFO
        _http_log.log(
            level,
            "request handled",
            extra={
                "event": "http.request",
                "method": scope.get("method", ""),
                "route": path,
                "status_code": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
