"""The installation wizard: three pages, each saved through ``save_installation``.

1. the endpoint, username and password (with a "test connection" button);
2. the activities to send;
3. invoicing; finishing this step activates the installation.

Every step can be opened again later to change what it holds. The password is never
shown: the form says that one is set, and an empty field keeps it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pegabridge.events.metrics import Activity
from pegabridge.installs import service
from pegabridge.installs.service import (
    INVOICE_INTERVALS,
    PO_NUMBER_MAX,
    InstallError,
    InstallSettings,
)
from pegabridge.web import operations
from pegabridge.web.auth import Session
from pegabridge.web.pages import (
    BrandView,
    FormState,
    brand_view,
    read_form,
    read_form_lists,
    redirect,
    render,
    require_session,
    runtime_of,
)

router = APIRouter(include_in_schema=False)

STEPS = ("Connection", "Activities", "Invoicing")


def _page(
    request: Request,
    session: Session,
    brand: BrandView,
    step: int,
    form: FormState,
    status: int = 200,
    **extra: Any,
) -> Response:
    return render(
        request,
        f"wizard_step{step}.html",
        {
            "brand": brand,
            "step": step,
            "steps": STEPS,
            "form": form,
            "editing": brand.installation is not None
            and brand.installation.activated_at is not None,
            **extra,
        },
        session,
        status,
    )


async def _open(
    request: Request, portal_id: int, brand_id: int
) -> tuple[Session, BrandView]:
    session = await require_session(request)
    return session, await brand_view(request, session, portal_id, brand_id)


# --- Step 1: connection. ---


@router.get("/brands/{portal_id}/{brand_id}/install/1")
async def step1(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand = await _open(request, portal_id, brand_id)
    inst = brand.installation
    form = FormState(
        {
            "endpoint_url": inst.endpoint_url if inst else "",
            "username": inst.username if inst else "",
            "extra_headers": operations.format_extra_headers(
                inst.extra_headers if inst else {}
            ),
        }
    )
    return _page(request, session, brand, 1, form)


@router.post("/brands/{portal_id}/{brand_id}/install/1")
async def step1_submit(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand = await _open(request, portal_id, brand_id)
    values = await read_form(request, session)
    form = FormState(
        {
            k: values.get(k, "")[:2000]
            for k in ("endpoint_url", "username", "extra_headers")
        }
    )
    password = values.get("password", "")

    headers: dict[str, str] = {}
    for check in (
        lambda: service.check_endpoint_url(form.values["endpoint_url"]),
        lambda: _check_username(form.values["username"]),
        lambda: _check_password(password, brand),
        lambda: headers.update(
            operations.parse_extra_headers(form.values["extra_headers"])
        ),
    ):
        try:
            check()
        except InstallError as exc:
            form.errors.setdefault(exc.field, str(exc))
    if form.errors:
        return _step1_errors(request, session, brand, form)

    if values.get("action") == "test":
        return await _test(request, session, brand, form, password, headers)

    try:
        await operations.save(
            runtime_of(request),
            portal_id,
            brand_id,
            InstallSettings(
                endpoint_url=values.get("endpoint_url", ""),
                username=values.get("username", "").strip(),
                password=password or None,
                extra_headers=headers,
            ),
        )
    except InstallError as exc:
        return _step1_error(request, session, brand, form, exc)
    return redirect(f"{brand.base_url}/install/2")


def _check_username(username: str) -> None:
    if not username.strip():
        raise InstallError("enter the username for the endpoint", "username")


def _check_password(password: str, brand: BrandView) -> None:
    has_password = brand.installation is not None and brand.installation.password_set
    if not password and not has_password:
        raise InstallError("enter the password for the endpoint", "password")
    if len(password) > 1000:
        raise InstallError("the password is too long", "password")


def _step1_error(
    request: Request,
    session: Session,
    brand: BrandView,
    form: FormState,
    exc: InstallError,
) -> Response:
    form.errors[exc.field or "endpoint_url"] = str(exc)
    return _step1_errors(request, session, brand, form)


def _step1_errors(
    request: Request, session: Session, brand: BrandView, form: FormState
) -> Response:
    if _wants_json(request):
        first = next(iter(form.errors.values()))
        return JSONResponse(
            {"ok": False, "outcome": "invalid", "message": first}, status_code=400
        )
    return _page(request, session, brand, 1, form, status=400)


async def _test(
    request: Request,
    session: Session,
    brand: BrandView,
    form: FormState,
    password: str,
    headers: dict[str, str],
) -> Response:
    try:
        report = await operations.test_connection(
            runtime_of(request),
            brand.installation,
            form.values["endpoint_url"],
            form.values["username"].strip(),
            password,
            headers,
        )
    except InstallError as exc:
        return _step1_error(request, session, brand, form, exc)
    if _wants_json(request):
        return JSONResponse(
            {
                "ok": report.ok,
                "outcome": report.outcome.value,
                "message": report.message,
                "status_code": report.status_code,
            }
        )
    return _page(
        request,
        session,
        brand,
        1,
        form,
        report=report,
        password_typed=bool(password),
    )


def _wants_json(request: Request) -> bool:
    return request.headers.get("x-requested-with") == "fetch"


# --- Step 2: activities. ---


@router.get("/brands/{portal_id}/{brand_id}/install/2")
async def step2(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand = await _open(request, portal_id, brand_id)
    if brand.installation is None:
        return redirect(f"{brand.base_url}/install/1")
    form = FormState({"chosen": set(brand.installation.activities)})
    return _page(request, session, brand, 2, form)


@router.post("/brands/{portal_id}/{brand_id}/install/2")
async def step2_submit(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand = await _open(request, portal_id, brand_id)
    await read_form(request, session)
    if brand.installation is None:
        return redirect(f"{brand.base_url}/install/1")
    words = (await read_form_lists(request)).get("activities", [])
    chosen = frozenset(Activity(w) for w in words if w in Activity.__members__.values())
    form = FormState({"chosen": set(chosen)})
    if not chosen:
        form.errors["activities"] = "choose at least one activity to send"
        return _page(request, session, brand, 2, form, status=400)

    await operations.save(
        runtime_of(request), portal_id, brand_id, InstallSettings(activities=chosen)
    )
    return redirect(f"{brand.base_url}/install/3")


# --- Step 3: invoicing, and activation. ---


@router.get("/brands/{portal_id}/{brand_id}/install/3")
async def step3(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand = await _open(request, portal_id, brand_id)
    if brand.installation is None:
        return redirect(f"{brand.base_url}/install/1")
    form = FormState(
        {
            "invoice_interval": brand.installation.invoice_interval,
            "po_number": brand.installation.po_number,
        }
    )
    return _page(request, session, brand, 3, form, intervals=INVOICE_INTERVALS)


@router.post("/brands/{portal_id}/{brand_id}/install/3")
async def step3_submit(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand = await _open(request, portal_id, brand_id)
    values = await read_form(request, session)
    if brand.installation is None:
        return redirect(f"{brand.base_url}/install/1")
    interval = values.get("invoice_interval", "")
    po_number = values.get("po_number", "").strip()
    form = FormState({"invoice_interval": interval, "po_number": po_number[:200]})
    first_time = brand.installation.activated_at is None

    try:
        if len(po_number) > PO_NUMBER_MAX:
            raise InstallError(
                f"a PO number has at most {PO_NUMBER_MAX} characters; this one has "
                f"{len(po_number)}",
                "po_number",
            )
        await operations.save(
            runtime_of(request),
            portal_id,
            brand_id,
            InstallSettings(invoice_interval=interval, po_number=po_number),
            activate=True,
        )
    except InstallError as exc:
        field = exc.field if exc.field in ("invoice_interval", "po_number") else "form"
        form.errors[field] = str(exc)
        return _page(
            request, session, brand, 3, form, status=400, intervals=INVOICE_INTERVALS
        )
    return redirect(f"{brand.base_url}/pega", "installed" if first_time else "saved")
