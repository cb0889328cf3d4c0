"""The installation wizard: three pages, each saved through ``save_installation``.

1. the endpoint and its credentials: a username and password (HTTP Basic) or an
   OAuth 2.0 client (token URL, client id and secret, scope), with a "test
   connection" button;
2. the activities to send;
3. invoicing; finishing this step activates the installation.

Every step can be opened again later to change what it holds. The password and the
client secret are never shown: the form says that one is set, and an empty field
keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pegabridge.events.metrics import Activity
from pegabridge.installs import service
from pegabridge.installs.service import (
    INVOICE_INTERVALS,
    PO_NUMBER_MAX,
    AuthKind,
    ClientAuth,
    InstallError,
    InstallSettings,
    OAuthClient,
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

# The text fields of step 1 (the password and client secret are never shown again).
STEP1_FIELDS = (
    "endpoint_url",
    "auth_kind",
    "username",
    "token_url",
    "client_id",
    "scope",
    "client_auth",
    "extra_headers",
)


@router.get("/brands/{portal_id}/{brand_id}/install/1")
async def step1(request: Request, portal_id: int, brand_id: int) -> Response:
    session, brand = await _open(request, portal_id, brand_id)
    inst = brand.installation
    form = FormState(
        {
            "endpoint_url": inst.endpoint_url if inst else "",
            "auth_kind": (inst.auth_kind if inst else AuthKind.BASIC).value,
            "username": inst.username if inst else "",
            "token_url": inst.token_url if inst else "",
            "client_id": inst.client_id if inst else "",
            "scope": inst.scope if inst else "",
            "client_auth": (inst.client_auth if inst else ClientAuth.BASIC).value,
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
    form = FormState({k: values.get(k, "")[:2000] for k in STEP1_FIELDS})
    secrets = Step1Secrets(values.get("password", ""), values.get("client_secret", ""))
    settings = _step1_settings(form, secrets, brand)
    if form.errors:
        return _step1_errors(request, session, brand, form)

    if values.get("action") == "test":
        return await _test(request, session, brand, form, secrets, settings)

    try:
        await operations.save(runtime_of(request), portal_id, brand_id, settings)
    except InstallError as exc:
        return _step1_error(request, session, brand, form, exc)
    return redirect(f"{brand.base_url}/install/2")


@dataclass(frozen=True)
class Step1Secrets:
    """What was typed into the password and client secret fields (empty: keep)."""

    password: str = field(repr=False)
    client_secret: str = field(repr=False)


def _step1_settings(
    form: FormState, secrets: Step1Secrets, brand: BrandView
) -> InstallSettings:
    """The settings step 1 saves; each problem is noted beside its field."""
    kind = _auth_kind(form)
    headers: dict[str, str] = {}
    checks: list[Callable[[], object]] = [
        lambda: service.check_endpoint_url(form.values["endpoint_url"]),
        lambda: headers.update(
            operations.parse_extra_headers(form.values["extra_headers"])
        ),
    ]
    if kind is AuthKind.OAUTH2:
        checks += _oauth_checks(form, secrets.client_secret, brand)
    else:
        checks += [
            lambda: _check_username(form.values["username"]),
            lambda: _check_password(secrets.password, brand),
        ]
    for check in checks:
        try:
            check()
        except InstallError as exc:
            form.errors.setdefault(exc.field, str(exc))

    if kind is AuthKind.BASIC:
        return InstallSettings(
            endpoint_url=form.values["endpoint_url"],
            auth_kind=kind,
            username=form.values["username"].strip(),
            password=secrets.password or None,
            extra_headers=headers,
        )
    return InstallSettings(
        endpoint_url=form.values["endpoint_url"],
        auth_kind=kind,
        token_url=form.values["token_url"],
        client_id=form.values["client_id"].strip(),
        client_secret=secrets.client_secret or None,
        scope=form.values["scope"],
        client_auth=_client_auth(form),
        extra_headers=headers,
    )


def _auth_kind(form: FormState) -> AuthKind:
    chosen = form.values["auth_kind"]
    if chosen in AuthKind.__members__.values():
        return AuthKind(chosen)
    return AuthKind.BASIC


def _client_auth(form: FormState) -> ClientAuth:
    chosen = form.values["client_auth"]
    if chosen in ClientAuth.__members__.values():
        return ClientAuth(chosen)
    return ClientAuth.BASIC


def _oauth_checks(
    form: FormState, client_secret: str, brand: BrandView
) -> list[Callable[[], object]]:
    return [
        lambda: service.check_endpoint_url(form.values["token_url"], "token_url"),
        lambda: _check_client_id(form.values["client_id"]),
        lambda: _check_client_secret(client_secret, brand),
        lambda: service.check_scope(form.values["scope"]),
    ]


def _check_username(username: str) -> None:
    if not username.strip():
        raise InstallError("enter the username for the endpoint", "username")


def _check_password(password: str, brand: BrandView) -> None:
    has_password = brand.installation is not None and brand.installation.password_set
    if not password and not has_password:
        raise InstallError("enter the password for the endpoint", "password")
    if len(password) > 1000:
        raise InstallError("the password is too long", "password")


def _check_client_id(client_id: str) -> None:
    if not client_id.strip():
        raise InstallError(
            "enter the client id of the OAuth 2.0 client registration", "client_id"
        )
    if len(client_id) > 400:
        raise InstallError("the client id is too long", "client_id")


def _check_client_secret(secret: str, brand: BrandView) -> None:
    inst = brand.installation
    if not secret and not (inst is not None and inst.client_secret_set):
        raise InstallError(
            "enter the client secret of the OAuth 2.0 client registration",
            "client_secret",
        )
    if len(secret) > 1000:
        raise InstallError("the client secret is too long", "client_secret")


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
    secrets: Step1Secrets,
    settings: InstallSettings,
) -> Response:
    try:
        report = await operations.test_connection(
            runtime_of(request),
            brand.installation,
            form.values["endpoint_url"],
            form.values["username"].strip(),
            secrets.password,
            settings.extra_headers,
            oauth=_oauth_to_test(settings, secrets),
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
        password_typed=bool(secrets.password or secrets.client_secret),
    )


def _oauth_to_test(
    settings: InstallSettings, secrets: Step1Secrets
) -> OAuthClient | None:
    """The OAuth 2.0 client typed into step 1; an empty secret means the saved one."""
    if settings.auth_kind is not AuthKind.OAUTH2:
        return None
    return OAuthClient(
        token_url=(settings.token_url or "").strip(),
        client_id=settings.client_id or "",
        client_secret=secrets.client_secret,
        scope=service.check_scope(settings.scope or ""),
        client_auth=settings.client_auth or ClientAuth.BASIC,
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
