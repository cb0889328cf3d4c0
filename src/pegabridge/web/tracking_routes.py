"""The public tracking endpoints hit from emails, and the conversions API.

The routes only translate HTTP to `TrackingService` calls and back: a token that does
not check out is a 404 with nothing recorded; a hit is answered only after it has
committed. Paths are those of `pegabridge.tracking.urls`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from pegabridge.config import Settings
from pegabridge.tracking.conversions import ConversionError, parse_conversion
from pegabridge.tracking.hits import HitKind, HitWriter
from pegabridge.tracking.machine import PREFETCH_HEADERS, MachineDetector
from pegabridge.tracking.records import TrackingRecords
from pegabridge.tracking.relay_ranges import (
    RANGES_PATH_ENV,
    AddressRanges,
    load_configured_ranges,
)
from pegabridge.tracking.service import CLICK_WINDOW_S, NotFound, TrackingService
from pegabridge.tracking.service import Request as Hit
from pegabridge.tracking.urls import key_ring_for
from pegabridge.web.api import ApiError, portal_of_request, read_body
from pegabridge.web.runtime import Runtime

logger = logging.getLogger(__name__)

# The smallest transparent GIF: 1x1, one colour, 43 bytes.
PIXEL: Final = base64.b64decode(
    "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
)
NO_CACHE: Final = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
}
CONVERSION_COOKIE: Final = "pb_conv"
ONE_CLICK_BODY: Final = b"List-Unsubscribe=One-Click"
MAX_FORM_BYTES: Final = 16 * 1024

_pages = Environment(
    loader=PackageLoader("pegabridge.web", "templates"),
    autoescape=select_autoescape(default=True),
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the application's lifespan, once the runtime is open.
    runtime: Runtime = app.state.runtime
    service = build_service(runtime)
    app.state.tracking = service
    try:
        yield
    finally:
        await service.writer.drain()


router = APIRouter(tags=["tracking"], lifespan=_lifespan)


def build_service(runtime: Runtime) -> TrackingService:
    """The tracking service of a running process, from its settings and parts."""
    settings = runtime.settings
    ring = key_ring_for(settings.tracking_keys, runtime.vault.derive(b"tracking"))
    detector = MachineDetector(apple_relay=relay_ranges(settings))
    writer = HitWriter(runtime.recorder, runtime.committer)
    return TrackingService(
        ring,
        detector,
        TrackingRecords(runtime.db, click_window_s=CLICK_WINDOW_S),
        writer,
        uuid_secret=runtime.vault.derive(b"tracking-uuid"),
    )


def relay_ranges(settings: Settings) -> AddressRanges | None:
    """Apple's relay ranges from `settings.apple_relay_ranges`; None: rule off."""
    return load_configured_ranges({RANGES_PATH_ENV: settings.apple_relay_ranges})


def _service(request: Request) -> TrackingService:
    service: TrackingService = request.app.state.tracking
    return service


def _hit(request: Request) -> Hit:
    headers = request.headers
    prefetch = {name: headers[name] for name in PREFETCH_HEADERS if name in headers}
    return Hit(
        method=request.method,
        user_agent=headers.get("user-agent", ""),
        client_ip=request.client.host if request.client else "",
        headers=prefetch,
    )


def _not_found() -> Response:
    return Response(
        "no such tracking link\n",
        status_code=404,
        media_type="text/plain",
        headers=NO_CACHE,
    )


def _page(name: str, status_code: int = 200, **values: object) -> HTMLResponse:
    html = _pages.get_template(f"tracking/{name}").render(**values)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


# --- Opens and clicks. ---


@router.get("/t/o/{token}", summary="Open pixel (1x1 GIF)")
async def open_pixel(token: str, request: Request) -> Response:
    """Record an open and answer the pixel; 404 for a token that is not ours."""
    try:
        await _service(request).open(token, _hit(request))
    except NotFound:
        return _not_found()
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


@router.get("/t/c/{token}", summary="Template link redirect")
async def click(token: str, request: Request) -> Response:
    """Record a click of a template link and redirect to its stored destination."""
    return await _redirect(token, request, HitKind.CLICK)


@router.get("/t/s/{token}", summary="Short link redirect")
async def short_link(token: str, request: Request) -> Response:
    """Record a click of a short link and redirect to its stored destination."""
    return await _redirect(token, request, HitKind.SHORT)


# A HEAD (prefetchers, link scanners) is recorded too, flagged as a machine hit; it is
# registered apart from the GET so that the API document names each operation once.
for _path, _endpoint in (
    ("/t/o/{token}", open_pixel),
    ("/t/c/{token}", click),
    ("/t/s/{token}", short_link),
):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)


async def _redirect(token: str, request: Request, kind: HitKind) -> Response:
    service = _service(request)
    try:
        redirect = await service.click(token, _hit(request), kind)
    except NotFound:
        return _not_found()

    response = Response(status_code=302, headers={"Cache-Control": "no-store"})
    # Byte for byte: Starlette would percent-encode a non-ASCII URL, so the header is
    # written raw, as UTF-8. The stored URL has no control character (checked).
    response.raw_headers.append((b"location", redirect.url.encode("utf-8")))
    https = str(request.base_url).startswith("https")
    response.set_cookie(
        CONVERSION_COOKIE,
        redirect.conversion_token,
        max_age=_settings(request).conversion_cookie_max_age_s,
        path="/t/",
        httponly=True,
        secure=https,
        samesite="none" if https else "lax",
    )
    return response


def _settings(request: Request) -> Settings:
    runtime: Runtime = request.app.state.runtime
    return runtime.settings


# --- Unsubscribes. ---


@router.get("/t/u/{token}", summary="Unsubscribe confirmation page")
async def unsubscribe_page(token: str, request: Request) -> Response:
    """The confirmation page; a GET never unsubscribes (link scanners follow links)."""
    try:
        page = await _service(request).unsubscribe_page(token)
    except NotFound:
        return _page("not_found.html", status_code=404)
    return _page(
        "unsubscribe.html",
        done=False,
        already=page.already_unsubscribed,
        brand_name=page.brand_name,
        masked_address=page.masked_address,
        action=request.url.path,
    )


@router.post("/t/u/{token}", summary="Unsubscribe (form or RFC 8058 one-click POST)")
async def unsubscribe(token: str, request: Request) -> Response:
    """Unsubscribe the customer; the form's POST and the one-click POST both count.

    RFC 8058: the mailbox provider POSTs `List-Unsubscribe=One-Click` to the URL of
    the `List-Unsubscribe` header; it gets a short 200, a person gets a page.
    """
    body = await read_body(request, MAX_FORM_BYTES)
    service = _service(request)
    try:
        done = await service.unsubscribe(token, _hit(request))
        page = await service.unsubscribe_page(token)
    except NotFound:
        return _page("not_found.html", status_code=404)

    if ONE_CLICK_BODY in body:
        return Response("unsubscribed\n", media_type="text/plain", headers=NO_CACHE)
    return _page(
        "unsubscribe.html",
        done=done.newly,
        already=not done.newly,
        brand_name=page.brand_name,
        masked_address=page.masked_address,
        action=request.url.path,
    )


# --- Conversions. ---


@router.get("/t/v", summary="Conversion pixel attributed by the click cookie")
async def conversion_pixel_by_cookie(request: Request) -> Response:
    """Record a conversion for the click in the cookie; without one, record nothing."""
    token = request.cookies.get(CONVERSION_COOKIE, "")
    if not token:
        return _pixel(attributed=False)
    return await _conversion_pixel(token, request, unattributed_ok=True)


@router.get("/t/v/{token}", summary="Conversion pixel attributed by its token")
async def conversion_pixel(token: str, request: Request) -> Response:
    """Record a conversion for the broadcast (and link) of the token in the path."""
    return await _conversion_pixel(token, request, unattributed_ok=False)


async def _conversion_pixel(
    token: str, request: Request, unattributed_ok: bool
) -> Response:
    query = request.query_params
    try:
        conversion = parse_conversion(
            name=query.get("name", ""),
            value=query.get("value"),
            currency=query.get("currency", ""),
            reference=query.get("reference", ""),
        )
    except ConversionError as exc:
        return JSONResponse(
            {"error": str(exc), "field": exc.field}, status_code=400, headers=NO_CACHE
        )

    try:
        await _service(request).convert(token, conversion, _hit(request))
    except NotFound:
        return _pixel(attributed=False) if unattributed_ok else _not_found()
    return _pixel(attributed=True)


def _pixel(attributed: bool) -> Response:
    headers = {**NO_CACHE, "X-Conversion": "recorded" if attributed else "unattributed"}
    return Response(PIXEL, media_type="image/gif", headers=headers)


class ConversionIn(BaseModel):
    """A conversion reported by the brand's server."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(
        max_length=200,
        description="The click token (from the tracked link) or the conversion token",
    )
    name: str = Field(default="", description="The goal, e.g. `order`")
    value: StrictInt | StrictFloat | None = None
    currency: str = Field(default="", description="ISO 4217 code of the value")
    reference: str = Field(
        default="", description="The client's reference; reporting it again is a no-op"
    )


@router.post(
    "/api/v1/conversions",
    status_code=202,
    summary="Report a conversion server to server",
    responses={
        202: {"description": "Recorded (or a duplicate of a recorded conversion)"},
        401: {"description": "Missing, unknown or revoked API key"},
        404: {"description": "The token is not valid for this portal"},
        422: {"description": "A field does not fit"},
    },
)
async def post_conversion(
    body: ConversionIn, request: Request, portal_id: int = Depends(portal_of_request)
) -> JSONResponse:
    """Record a conversion attributed to the click (or broadcast) of `token`."""
    try:
        conversion = parse_conversion(
            body.name, body.value, body.currency, body.reference
        )
    except ConversionError as exc:
        raise ApiError(422, str(exc), field=exc.field) from None

    try:
        written = await _service(request).convert(
            body.token, conversion, _hit(request), portal_id=portal_id
        )
    except NotFound:
        raise ApiError(
            404, "this token is not valid for the API key's portal"
        ) from None
    return JSONResponse(
        status_code=202, content={"uuid": written.event_uuid, "state": written.state}
    )
