"""Answering 503, not 500, while the database cannot be reached.

When the database restarts or the network to it breaks, a request that needs it gets
``503 Service Unavailable`` with ``Retry-After``, the same answer ``/readyz`` gives, so
that a load balancer and a sender both know to try again. Any other database error is
a bug: it is logged with its traceback and answered 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5

# What asyncpg and PostgreSQL call a lost or refused connection.
_CONNECTION_WORDS = ("connect", "connection", "starting up", "shutting down")


def is_connection_loss(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database is unreachable", not "the query is wrong"."""
    if isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc.orig, OSError):
            return True
        return any(word in str(exc.orig).lower() for word in _CONNECTION_WORDS)
    return False


def unavailable_response() -> JSONResponse:
    """The 503 answer while the database is down."""
    return JSONResponse(
        status_code=503,
        content={"error": "the database is unavailable; try again shortly"},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def add_unavailable_handler(app: FastAPI) -> None:
    """Answer 503 to requests that failed because the database is out of reach."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if _out_of_range(exc):
            return out_of_range_response()
        if not is_connection_loss(exc):
            log.error(
                "request failed",
                extra={"event": "web.unhandled", "path": request.url.path},
                exc_info=exc,
            )
            return JSONResponse(status_code=500, content={"error": "internal error"})
        log.warning(
            "database unavailable",
            extra={
                "event": "service.database_unavailable",
                "path": request.url.path,
                "error": f"{type(exc).__name__}: {exc}"[:200],
            },
        )
        return unavailable_response()

    async def too_large(_request: Request, _exc: Exception) -> JSONResponse:
        return out_of_range_response()

    app.add_exception_handler(DBAPIError, handle)
    app.add_exception_handler(OSError, handle)
    # SQLite's driver refuses integers beyond 64 bits before the query runs.
    app.add_exception_handler(OverflowError, too_large)


def _out_of_range(exc: BaseException) -> bool:
    """A number too large for its column: the driver refused it, no query ran."""
    seen: BaseException | None = exc
    for _depth in range(6):
        if seen is None:
            return False
        if isinstance(seen, OverflowError | DataError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def out_of_range_response() -> JSONResponse:
    """The answer to a number in the request that no stored value can be: 422."""
    return JSONResponse(
        status_code=422,
        content={"error": "a number in the request is out of range (64-bit at most)"},
    )
