"""The ASGI application: API routes, health checks, and the pages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from pegabridge.config import Settings, get_settings
from pegabridge.feedback.intake import start_receiver, stop_receiver
from pegabridge.logs import RequestIdMiddleware
from pegabridge.web import api, mailing_api, ops_routes, pages, tracking_routes
from pegabridge.web.runtime import Runtime
from pegabridge.web.unavailable import add_unavailable_handler

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, deliver: bool = True, migrate: bool = True
) -> FastAPI:
    """The pegabridge web application; delivery workers run inside its lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings, deliver=deliver, migrate=migrate)
        app.state.runtime = runtime
        app.state.api_key_cache = {}
        log.info("pegabridge ready", extra={"event": "service.ready"})
        await pages.announce_setup(runtime)
        try:
            app.state.feedback_receiver = await start_receiver(runtime)
            yield
        finally:
            await stop_receiver(getattr(app.state, "feedback_receiver", None))
            await runtime.close()

    app = FastAPI(
        title="pegabridge",
        summary="Every email interaction, in real time, to the brand's Pega endpoint.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _add_api_page(app)
    app.include_router(api.router)
    app.include_router(mailing_api.router)
    pages.install_web(app)
    app.include_router(ops_routes.router)
    app.include_router(tracking_routes.router)
    app.add_middleware(RequestIdMiddleware)
    _add_error_handlers(app)
    add_unavailable_handler(app)
    _add_health(app)
    return app


def _add_api_page(app: FastAPI) -> None:
    """``/docs``: the API document in Swagger UI, from pegabridge's own static files."""
    vendor = "/static/vendor/swagger-ui"

    @app.get("/docs", include_in_schema=False)
    async def api_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="pegabridge API",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_favicon_url=f"{vendor}/favicon-32x32.png",
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(api.ApiError)
    async def _api_error(_request: Request, exc: api.ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=exc.body)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        message = "invalid request"
        body_sent = request.headers.get("content-length", "0") != "0"
        if body_sent and "json" not in request.headers.get("content-type", ""):
            # curl -d sends form encoding unless told otherwise: say what to fix.
            message = "send the body as JSON with 'Content-Type: application/json'"
        return JSONResponse(
            status_code=422, content={"error": message, "errors": errors}
        )


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["health"], summary="The database answers, the workers run"
    )
    async def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        try:
            async with runtime.db.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning(
                "not ready",
                extra={"event": "service.not_ready", "error": str(exc)[:200]},
            )
            return JSONResponse(status_code=503, content={"status": "database down"})
        workers_ok, workers = ops_routes.readiness(runtime)
        if not workers_ok:
            return JSONResponse(
                status_code=503, content={"status": "not ready", "workers": workers}
            )
        return JSONResponse(content={"status": "ready", "workers": workers})
