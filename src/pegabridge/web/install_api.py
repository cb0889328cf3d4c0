"""The installation API: what the wizard and the installation page do, for automation.

Every call carries the portal's API key (``Authorization: Bearer <key>``) and sees only
that portal's brands. Answers never contain a password or a client secret:
``password_set`` and ``client_secret_set`` say whether one is saved.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from pegabridge.events.metrics import Activity, Metric
from pegabridge.installs import invoicing, service
from pegabridge.installs.service import (
    AuthKind,
    ClientAuth,
    Installation,
    InstallError,
    InstallSettings,
    OAuthClient,
)
from pegabridge.web import operations
from pegabridge.web.api import ApiError, portal_of_request, runtime_of

router = APIRouter(prefix="/api/v1/brands", tags=["installations"])


class InstallationOut(BaseModel):
    """A brand's Pega app installation; the password and secret are never included."""

    id: int
    portal_id: int
    brand_id: int
    state: str
    pause_reason: str
    endpoint_url: str
    auth: AuthKind
    username: str
    password_set: bool
    token_url: str
    client_id: str
    client_secret_set: bool
    scope: str
    client_auth: ClientAuth
    extra_header_names: list[str]
    activities: list[Activity]
    invoice_interval: str
    po_number: str
    activated_at: float | None

    @classmethod
    def of(cls, inst: Installation) -> InstallationOut:
        return cls(
            id=inst.id,
            portal_id=inst.portal_id,
            brand_id=inst.brand_id,
            state=inst.state.value,
            pause_reason=inst.pause_reason,
            endpoint_url=inst.endpoint_url,
            auth=inst.auth_kind,
            username=inst.username,
            password_set=inst.password_set,
            token_url=inst.token_url,
            client_id=inst.client_id,
            client_secret_set=inst.client_secret_set,
            scope=inst.scope,
            client_auth=inst.client_auth,
            extra_header_names=sorted(inst.extra_headers),
            activities=[a for a in Activity if a in inst.activities],
            invoice_interval=inst.invoice_interval,
            po_number=inst.po_number,
            activated_at=inst.activated_at,
        )


class BrandOut(BaseModel):
    """A brand of the portal and the state of its Pega app."""

    brand_id: int
    name: str
    installation: InstallationOut | None


class OAuthFields(BaseModel):
    """The OAuth 2.0 client credentials fields; left out keeps the saved value."""

    model_config = ConfigDict(extra="forbid")

    auth: AuthKind | None = Field(
        default=None,
        description="basic (username and password) or oauth2 (client credentials)",
    )
    token_url: str | None = Field(default=None, max_length=2000)
    client_id: str | None = Field(default=None, max_length=400)
    client_secret: str | None = Field(default=None, max_length=1000)
    scope: str | None = Field(default=None, max_length=service.SCOPE_MAX)
    client_auth: ClientAuth | None = Field(
        default=None,
        description="basic: id and secret in an Authorization header "
        "(client_secret_basic); post: in the form body (client_secret_post)",
    )


class InstallationIn(OAuthFields):
    """Wizard values; a field left out keeps its saved value."""

    endpoint_url: str | None = Field(default=None, max_length=2000)
    username: str | None = Field(default=None, max_length=400)
    password: str | None = Field(default=None, max_length=1000)
    extra_headers: dict[str, str] | None = None
    activities: list[Activity] | None = None
    invoice_interval: str | None = None
    po_number: str | None = Field(default=None, max_length=service.PO_NUMBER_MAX)
    activate: bool = Field(
        default=False,
        description="Finish the wizard: the installation starts sending.",
    )


class ConnectionTestIn(OAuthFields):
    """Values to test; left out means the saved ones."""

    endpoint_url: str | None = Field(default=None, max_length=2000)
    username: str | None = Field(default=None, max_length=400)
    password: str | None = Field(default=None, max_length=1000)


class ConnectionTestOut(BaseModel):
    ok: bool
    outcome: str
    message: str
    status_code: int | None
    duration_ms: float


class StatusOut(BaseModel):
    installation: InstallationOut
    sent_today: dict[str, int]
    waiting: int
    dead_letters: int
    last_failures: list[dict[str, object]]


class ChangedOut(BaseModel):
    changed: bool
    state: str


class TestEventOut(BaseModel):
    uuid: str
    state: str


class ReplayOut(BaseModel):
    replayed: int


class StatementOut(BaseModel):
    period: str
    period_start: str
    period_end: str
    po_number: str
    events_sent: dict[str, int]
    total: int


async def _brand(request: Request, brand_id: int) -> tuple[int, str]:
    portal_id = await portal_of_request(request)
    async with runtime_of(request).db.connect() as conn:
        try:
            name = await service.require_brand(conn, portal_id, brand_id)
        except InstallError:
            raise ApiError(404, f"this portal has no brand {brand_id}") from None
    return portal_id, name


async def _installation(request: Request, brand_id: int) -> Installation:
    portal_id, _ = await _brand(request, brand_id)
    async with runtime_of(request).db.connect() as conn:
        inst = await service.find_installation(conn, portal_id, brand_id)
    if inst is None:
        raise ApiError(404, f"brand {brand_id} has no Pega app installed")
    return inst


def _refused(exc: InstallError) -> ApiError:
    return ApiError(422, str(exc), field=exc.field)


@router.get("", summary="The portal's brands and their Pega app")
async def list_brands(request: Request) -> list[BrandOut]:
    portal_id = await portal_of_request(request)
    async with runtime_of(request).db.connect() as conn:
        out = []
        for brand_id, name in await service.list_brands(conn, portal_id):
            inst = await service.find_installation(conn, portal_id, brand_id)
            out.append(
                BrandOut(
                    brand_id=brand_id,
                    name=name,
                    installation=InstallationOut.of(inst) if inst else None,
                )
            )
    return out


@router.get("/{brand_id}/pega", summary="The brand's Pega app installation")
async def get_installation(request: Request, brand_id: int) -> InstallationOut:
    return InstallationOut.of(await _installation(request, brand_id))


@router.put(
    "/{brand_id}/pega",
    summary="Install the Pega app or change its settings (the wizard's steps)",
    responses={422: {"description": "A value is refused; nothing was saved"}},
)
async def put_installation(
    request: Request, brand_id: int, body: InstallationIn
) -> InstallationOut:
    """Save the given values; with ``activate`` the installation starts sending."""
    portal_id, _ = await _brand(request, brand_id)
    try:
        headers = (
            operations.parse_extra_headers(
                operations.format_extra_headers(body.extra_headers)
            )
            if body.extra_headers is not None
            else None
        )
        inst = await operations.save(
            runtime_of(request),
            portal_id,
            brand_id,
            InstallSettings(
                endpoint_url=body.endpoint_url,
                username=body.username,
                password=body.password or None,
                extra_headers=headers,
                activities=(
                    frozenset(body.activities) if body.activities is not None else None
                ),
                invoice_interval=body.invoice_interval,
                po_number=body.po_number,
                auth_kind=body.auth,
                token_url=body.token_url,
                client_id=body.client_id,
                client_secret=body.client_secret or None,
                scope=body.scope,
                client_auth=body.client_auth,
            ),
            activate=body.activate,
        )
    except InstallError as exc:
        raise _refused(exc) from None
    return InstallationOut.of(inst)


@router.post(
    "/{brand_id}/pega/test-connection",
    summary="Send one test request to the endpoint and say what came back",
)
async def test_connection(
    request: Request, brand_id: int, body: ConnectionTestIn
) -> ConnectionTestOut:
    portal_id, _ = await _brand(request, brand_id)
    async with runtime_of(request).db.connect() as conn:
        inst = await service.find_installation(conn, portal_id, brand_id)
    url = body.endpoint_url or (inst.endpoint_url if inst else "")
    username = body.username or (inst.username if inst else "")
    try:
        report = await operations.test_connection(
            runtime_of(request),
            inst,
            url,
            username,
            body.password or "",
            inst.extra_headers if inst else None,
            oauth=_oauth_to_test(body, inst),
        )
    except InstallError as exc:
        raise _refused(exc) from None
    return ConnectionTestOut(
        ok=report.ok,
        outcome=report.outcome.value,
        message=report.message,
        status_code=report.status_code,
        duration_ms=report.duration_ms,
    )


def _oauth_to_test(body: OAuthFields, inst: Installation | None) -> OAuthClient | None:
    """The OAuth 2.0 client to test, from the body and else the saved values; an
    empty secret stands for the saved one."""
    kind = body.auth or (inst.auth_kind if inst else AuthKind.BASIC)
    if kind is not AuthKind.OAUTH2:
        return None

    def chosen(given: str | None, saved: str) -> str:
        return given if given is not None else saved

    return OAuthClient(
        token_url=chosen(body.token_url, inst.token_url if inst else ""),
        client_id=chosen(body.client_id, inst.client_id if inst else ""),
        client_secret=body.client_secret or "",
        scope=chosen(body.scope, inst.scope if inst else ""),
        client_auth=body.client_auth
        or (inst.client_auth if inst else ClientAuth.BASIC),
    )


@router.get("/{brand_id}/pega/status", summary="Sent today, waiting, failures")
async def status(request: Request, brand_id: int) -> StatusOut:
    inst = await _installation(request, brand_id)
    async with runtime_of(request).db.connect() as conn:
        numbers = await operations.overview(conn, inst.id)
    return StatusOut(
        installation=InstallationOut.of(inst),
        sent_today={m.value: n for m, n in numbers.sent_today.items()},
        waiting=numbers.waiting,
        dead_letters=numbers.dead,
        last_failures=[f.__dict__ for f in numbers.failures],
    )


@router.post("/{brand_id}/pega/pause", summary="Stop sending; events wait")
async def pause(request: Request, brand_id: int) -> ChangedOut:
    inst = await _installation(request, brand_id)
    changed = await operations.pause(
        runtime_of(request), inst, "paused through the API"
    )
    return ChangedOut(changed=changed, state="paused" if changed else inst.state)


@router.post("/{brand_id}/pega/resume", summary="Send again; waiting events first")
async def resume(request: Request, brand_id: int) -> ChangedOut:
    inst = await _installation(request, brand_id)
    changed = await operations.resume(runtime_of(request), inst)
    return ChangedOut(changed=changed, state="active" if changed else inst.state)


@router.post("/{brand_id}/pega/test-event", summary="Record and send one test event")
async def test_event(request: Request, brand_id: int) -> TestEventOut:
    inst = await _installation(request, brand_id)
    portal_id, brand_name = await _brand(request, brand_id)
    async with runtime_of(request).db.connect() as conn:
        portal_name = await service.require_portal(conn, portal_id)
    event_uuid, state = await operations.send_test_event(
        runtime_of(request), inst, portal_name, brand_name
    )
    return TestEventOut(uuid=event_uuid, state=state)


@router.post(
    "/{brand_id}/pega/replay-dead-letters",
    summary="Send the dead letters again, unchanged",
)
async def replay(request: Request, brand_id: int) -> ReplayOut:
    inst = await _installation(request, brand_id)
    return ReplayOut(
        replayed=await operations.replay_dead_letters(runtime_of(request), inst)
    )


@router.delete(
    "/{brand_id}/pega",
    summary="Uninstall; waiting events are kept as dead letters and not sent",
)
async def delete_installation(request: Request, brand_id: int) -> ChangedOut:
    inst = await _installation(request, brand_id)
    await operations.uninstall(runtime_of(request), inst)
    return ChangedOut(changed=True, state="uninstalled")


@router.get(
    "/{brand_id}/pega/statement",
    summary="Events sent per metric in an invoicing period (JSON or CSV)",
    response_model=StatementOut,
)
async def statement(
    request: Request,
    brand_id: int,
    period: Annotated[
        str, Query(max_length=20, description="2026-05, 2026-Q2 or 2026; default now")
    ] = "",
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response | StatementOut:
    inst = await _installation(request, brand_id)
    try:
        chosen = (
            invoicing.parse_period(inst.invoice_interval, period)
            if period
            else invoicing.period_containing(
                inst.invoice_interval, dt.datetime.now(dt.UTC)
            )
        )
    except ValueError as exc:
        raise ApiError(422, str(exc), field="period") from None
    async with runtime_of(request).db.connect() as conn:
        document = await invoicing.statement(conn, inst, chosen)
    if format == "csv":
        return Response(invoicing.statement_csv(document), media_type="text/csv")
    return StatementOut(
        period=chosen.label,
        period_start=chosen.start.isoformat(),
        period_end=chosen.end.isoformat(),
        po_number=document.po_number,
        events_sent={m.value: n for m, n in document.counts.items() if m in Metric},
        total=document.total,
    )
