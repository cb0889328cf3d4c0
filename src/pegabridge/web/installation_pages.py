"""The page of an installed Pega app: its state, today's numbers, failures, actions.

Actions are small forms (pause, resume, send a test event, replay dead letters,
uninstall after a confirmation). The invoicing statement of a period is a page and a
CSV download.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pegabridge.installs import invoicing
from pegabridge.installs.service import Installation, InstallState
from pegabridge.web import operations
from pegabridge.web.auth import Session
from pegabridge.web.pages import (
    BrandView,
    PageError,
    brand_view,
    read_form,
    redirect,
    render,
    require_session,
    runtime_of,
    signer_of,
)

router = APIRouter(include_in_schema=False)


async def _installed(
    request: Request, portal_id: int, brand_id: int
) -> tuple[Session, BrandView, Installation]:
    session = await require_session(request)
    brand = await brand_view(request, session, portal_id, brand_id)
    if brand.installation is None:
        raise PageError(
            404,
            "The Pega app is not installed",
            f"Brand {brand.brand_name} has no Pega app yet. Install it from the store.",
        )
    return session, brand, brand.installation


@router.get("/brands/{portal_id}/{brand_id}/pega")
async def installation_page(
    request: Request, portal_id: int, brand_id: int
) -> Response:
    session, brand, inst = await _installed(request, portal_id, brand_id)
    if inst.state is InstallState.DRAFT:
        return redirect(f"{brand.base_url}/install/1")
    async with runtime_of(request).db.connect() as conn:
        numbers = await operations.overview(conn, inst.id)
    # Messages travel signed in the URL, so a crafted link cannot put words here.
    message = signer_of(request).unsign(request.query_params.get("message", "")) or ""
    return render(
        request,
        "installation.html",
        {"brand": brand, "inst": inst, "numbers": numbers, "message": message},
        session,
    )


@router.post("/brands/{portal_id}/{brand_id}/pega/pause")
async def pause(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand, inst = await _installed(request, portal_id, brand_id)
    await read_form(request, session)
    changed = await operations.pause(
        runtime_of(request), inst, f"paused by {session.user.email}"
    )
    return redirect(f"{brand.base_url}/pega", "paused" if changed else "not-changed")


@router.post("/brands/{portal_id}/{brand_id}/pega/resume")
async def resume(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand, inst = await _installed(request, portal_id, brand_id)
    await read_form(request, session)
    changed = await operations.resume(runtime_of(request), inst)
    return redirect(f"{brand.base_url}/pega", "resumed" if changed else "not-changed")


@router.post("/brands/{portal_id}/{brand_id}/pega/test-event")
async def test_event(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand, inst = await _installed(request, portal_id, brand_id)
    await read_form(request, session)
    event_uuid, state = await operations.send_test_event(
        runtime_of(request), inst, brand.portal_name, brand.brand_name
    )
    if state == "pending":
        text = f"Test event {event_uuid} recorded and on its way."
    else:
        text = f"Test event {event_uuid} recorded but not sent ({state})."
    return redirect(f"{brand.base_url}/pega?message={_note(request, text)}")


@router.post("/brands/{portal_id}/{brand_id}/pega/replay")
async def replay(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand, inst = await _installed(request, portal_id, brand_id)
    await read_form(request, session)
    count = await operations.replay_dead_letters(runtime_of(request), inst)
    text = f"{count} dead letter(s) sent again." if count else "No dead letters."
    return redirect(f"{brand.base_url}/pega?message={_note(request, text)}")


@router.get("/brands/{portal_id}/{brand_id}/pega/uninstall")
async def uninstall_page(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand, inst = await _installed(request, portal_id, brand_id)
    async with runtime_of(request).db.connect() as conn:
        waiting = await operations.count_waiting(conn, inst.id)
    return render(
        request,
        "uninstall.html",
        {"brand": brand, "inst": inst, "waiting": waiting},
        session,
    )


@router.post("/brands/{portal_id}/{brand_id}/pega/uninstall")
async def uninstall(request: Request, portal_id: int, brand_id: int) -> Response:
    session, _brand, inst = await _installed(request, portal_id, brand_id)
    await read_form(request, session)
    await operations.uninstall(runtime_of(request), inst)
    return redirect("/store", "uninstalled")


# --- Invoicing. ---


def _period(inst: Installation, label: str) -> invoicing.Period:
    if not label:
        return invoicing.period_containing(
            inst.invoice_interval, dt.datetime.now(dt.UTC)
        )
    try:
        return invoicing.parse_period(inst.invoice_interval, label[:20])
    except ValueError as exc:
        raise PageError(400, "No such period", f"{exc}. Nothing was changed.") from None


@router.get("/brands/{portal_id}/{brand_id}/pega/invoice")
async def invoice_page(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand, inst = await _installed(request, portal_id, brand_id)
    period = _period(inst, request.query_params.get("period", ""))
    async with runtime_of(request).db.connect() as conn:
        document = await invoicing.statement(conn, inst, period)
    return render(
        request,
        "invoice.html",
        {"brand": brand, "inst": inst, "doc": document},
        session,
    )


@router.get("/brands/{portal_id}/{brand_id}/pega/invoice.csv")
async def invoice_csv(request: Request, portal_id: int, brand_id: int) -> Response:
    _session, brand, inst = await _installed(request, portal_id, brand_id)
    period = _period(inst, request.query_params.get("period", ""))
    async with runtime_of(request).db.connect() as conn:
        document = await invoicing.statement(conn, inst, period)
    name = f"pega-{brand.portal_id}-{brand.brand_id}-{period.label}.csv"
    return Response(
        invoicing.statement_csv(document),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _note(request: Request, text: str) -> str:
    return quote(signer_of(request).sign(text))
