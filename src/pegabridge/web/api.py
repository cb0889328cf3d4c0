"""The ingest API: other systems hand in ready activities."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pegabridge.delivery.recorder import Submitted
from pegabridge.events.ingest import (
    ActivityRefused,
    BodyError,
    accept_activity,
    parse_body,
)
from pegabridge.installs import service as installs
from pegabridge.web.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["ingest"])

_KEY_CACHE_S = 30.0


class ApiError(Exception):
    """An answer other than success, with a status code and a JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def portal_of_request(request: Request) -> int:
    """The portal of the request's API key (``Authorization: Bearer <key>``)."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401, "send the portal's API key as 'Authorization: Bearer <key>'"
        )

    key = key.strip()
    cache: dict[str, tuple[int, float]] = request.app.state.api_key_cache
    cached = cache.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[1] < _KEY_CACHE_S:
        return cached[0]

    async with runtime_of(request).db.connect() as conn:
        portal_id = await installs.portal_of_api_key(conn, key)
    if portal_id is None:
        # Refusals are not cached: wrong keys sent at will must not fill memory.
        cache.pop(key, None)
        raise ApiError(401, "this API key is unknown or revoked")
    cache[key] = (portal_id, now)
    return portal_id


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; one larger than ``limit`` bytes is refused early."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes; split it")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes; split it")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/activities",
    status_code=202,
    summary="Hand in one activity, a JSON array of activities, or NDJSON",
    responses={
        202: {"description": "Recorded; every uuid is committed and will be sent"},
        400: {"description": "The body is not JSON, a JSON array, or NDJSON"},
        401: {"description": "Missing, unknown or revoked API key"},
        413: {"description": "The body is too large"},
        422: {"description": "Some activities do not fit the format; nothing stored"},
    },
)
async def post_activities(request: Request) -> JSONResponse:
    """Record activities; answer 202 only after they are committed.

    All or nothing: when one item is refused, the answer lists every refused item with
    its field errors and nothing of the request is stored. An activity with a ``uuid``
    that is already recorded is reported as ``duplicate`` and recorded once.
    """
    runtime = runtime_of(request)
    portal_id = await portal_of_request(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    try:
        items = parse_body(body, request.headers.get("content-type", ""))
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None
    if len(items) > runtime.settings.max_items_per_request:
        raise ApiError(
            413,
            f"at most {runtime.settings.max_items_per_request} activities per request",
        )

    accepted, refused = _validate(items, portal_id)
    if refused:
        raise ApiError(
            422,
            f"{len(refused)} of {len(items)} activities refused; nothing was stored",
            items=refused,
        )

    result = await runtime.recorder.record(accepted)
    return JSONResponse(
        status_code=202,
        content={
            "accepted": len(items),
            "counts": result.count(),
            "items": [
                {"uuid": u, "state": s}
                for u, s in zip(result.uuids, result.states, strict=True)
            ],
        },
    )


def _validate(
    items: list[Any], portal_id: int
) -> tuple[list[Submitted], list[dict[str, Any]]]:
    accepted: list[Submitted] = []
    refused: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            ok = accept_activity(item, portal_id)
        except ActivityRefused as exc:
            refused.append(
                {"index": index, "errors": [e.as_dict() for e in exc.errors]}
            )
            continue
        accepted.append(Submitted(ok.event, ok.has_metric_id))
    return accepted, refused
