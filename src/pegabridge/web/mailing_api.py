"""The mailing HTTP API: customers, contents, campaigns, triggers, sends, and the Pega
trigger webhook.

Brand routes take the portal's API key (``Authorization: Bearer <key>``); the webhook
takes the trigger's own secret. Errors answer a 4xx with ``{"error", "field"}``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.events.models import ManualValue
from pegabridge.installs import service as installs
from pegabridge.installs.service import InstallError
from pegabridge.mailing import contents as content_store
from pegabridge.mailing import customers as customer_store
from pegabridge.mailing.contents import ContentInput, ContentInvalid
from pegabridge.mailing.customers import CustomerInput, ImportReport, read_csv
from pegabridge.mailing.errors import MailingError
from pegabridge.mailing.sends import SendSpec
from pegabridge.mailing.service import Mailing
from pegabridge.mailing.triggers import (
    TriggerInput,
    TriggerService,
    check_trigger_input,
    create_trigger,
)
from pegabridge.store.tables import campaigns
from pegabridge.web.api import ApiError, portal_of_request, read_body, runtime_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["mailing"])

IMPORT_BATCH = 500


def mailing_of(request: Request) -> Mailing:
    """The process's mailing side, assembled on first use."""
    state = request.app.state
    mailing: Mailing | None = getattr(state, "mailing", None)
    if mailing is None:
        runtime = runtime_of(request)
        mailing = Mailing.assemble(
            runtime.settings,
            runtime.db,
            runtime.committer,
            runtime.vault,
            runtime.recorder,
        )
        state.mailing = mailing
        state.mailing_tasks = set()
    return mailing


@asynccontextmanager
async def _answers() -> AsyncIterator[None]:
    try:
        yield
    except ContentInvalid as exc:
        problems = [
            {"part": p.part, "line": p.line, "cause": p.cause} for p in exc.problems
        ]
        raise ApiError(422, exc.message, field=exc.field, problems=problems) from exc
    except MailingError as exc:
        raise ApiError(exc.status, exc.message, field=exc.field) from exc
    except InstallError as exc:
        raise ApiError(404, str(exc), field=exc.field) from exc


async def _brand(request: Request, brand_id: int) -> int:
    portal_id = await portal_of_request(request)
    async with runtime_of(request).db.connect() as conn, _answers():
        await installs.require_brand(conn, portal_id, brand_id)
    return portal_id


# --- Customers. ---


class CustomerBody(BaseModel):
    """A customer's values; on update, absent values stay as they are."""

    email: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    fields: dict[str, Any] | None = None
    tracking_consent: bool | None = None


@router.post("/brands/{brand_id}/customers", status_code=201)
async def create_customer(
    request: Request, brand_id: int, body: CustomerBody
) -> dict[str, Any]:
    """Create a customer."""
    portal_id = await _brand(request, brand_id)
    async with _answers():
        customer = await runtime_of(request).committer.run(
            lambda c: customer_store.create_customer(
                c, portal_id, brand_id, CustomerInput(**body.model_dump())
            )
        )
    return customer.as_json()


@router.get("/brands/{brand_id}/customers")
async def find_customer(
    request: Request,
    brand_id: int,
    email: str = "",
    external_id: str = "",
) -> dict[str, Any]:
    """Look a customer up by address or external id."""
    portal_id = await _brand(request, brand_id)
    key, value = ("email", email) if email else ("external_id", external_id)
    if not value:
        raise ApiError(422, "give email=... or external_id=...", field="email")
    async with runtime_of(request).db.connect() as conn:
        customer = await customer_store.find_customer(
            conn, portal_id, brand_id, key, value
        )
    if customer is None:
        raise ApiError(404, f"no customer with {key} {value!r}", field=key)
    return customer.as_json()


@router.get("/brands/{brand_id}/customers/{customer_id}")
async def get_customer(
    request: Request, brand_id: int, customer_id: int
) -> dict[str, Any]:
    """One customer."""
    portal_id = await _brand(request, brand_id)
    async with runtime_of(request).db.connect() as conn, _answers():
        customer = await customer_store.get_customer(
            conn, portal_id, brand_id, customer_id
        )
    return customer.as_json()


@router.patch("/brands/{brand_id}/customers/{customer_id}")
async def update_customer(
    request: Request, brand_id: int, customer_id: int, body: CustomerBody
) -> dict[str, Any]:
    """Change a customer; a new address resets the soft bounce count."""
    portal_id = await _brand(request, brand_id)
    async with _answers():
        customer = await runtime_of(request).committer.run(
            lambda c: customer_store.update_customer(
                c, portal_id, brand_id, customer_id, CustomerInput(**body.model_dump())
            )
        )
    return customer.as_json()


@router.delete("/brands/{brand_id}/customers/{customer_id}", status_code=204)
async def erase_customer(request: Request, brand_id: int, customer_id: int) -> None:
    """Erase a customer and their personal data."""
    portal_id = await _brand(request, brand_id)
    async with _answers():
        await runtime_of(request).committer.run(
            lambda c: customer_store.erase_customer(c, portal_id, brand_id, customer_id)
        )


@router.post("/brands/{brand_id}/customers/import")
async def import_customers(request: Request, brand_id: int) -> dict[str, Any]:
    """Import a CSV body (``email`` column required); reports rejected rows."""
    portal_id = await _brand(request, brand_id)
    runtime = runtime_of(request)
    raw = await read_body(request, runtime.settings.max_body_bytes)
    report = ImportReport()
    batch: list[customer_store.CsvRow] = []

    async def flush(rows: list[customer_store.CsvRow]) -> None:
        await runtime.committer.run(
            lambda c: customer_store.import_batch(c, portal_id, brand_id, rows, report)
        )

    async with _answers():
        customer_store.count_utf8_lines(raw.splitlines())
        text = raw.decode("utf-8-sig")
        for item in read_csv(io.StringIO(text, newline="")):
            if isinstance(item, customer_store.RejectedRow):
                report.rejected.append(item)
                continue
            batch.append(item)
            if len(batch) >= IMPORT_BATCH:
                await flush(batch)
                batch = []
        if batch:
            await flush(batch)
    return report.as_json()


# --- Contents and campaigns. ---


class ContentBody(BaseModel):
    """A content's values; on update, absent values stay as they are."""

    name: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    variables: dict[str, ManualValue] | None = None
    from_address: str | None = None


@router.post("/brands/{brand_id}/contents", status_code=201)
async def create_content(
    request: Request, brand_id: int, body: ContentBody
) -> dict[str, Any]:
    """Create a content; template errors answer 422 with part, line and cause."""
    portal_id = await _brand(request, brand_id)
    values = ContentInput(**body.model_dump())
    async with _answers():
        content_store.check_new_content(values)
        content = await runtime_of(request).committer.run(
            lambda c: content_store.create_content(c, portal_id, brand_id, values)
        )
    return content.as_json()


@router.patch("/brands/{brand_id}/contents/{content_id}")
async def update_content(
    request: Request, brand_id: int, content_id: int, body: ContentBody
) -> dict[str, Any]:
    """Change a content; a change with template errors stores nothing."""
    portal_id = await _brand(request, brand_id)
    async with _answers():
        content = await runtime_of(request).committer.run(
            lambda c: content_store.update_content(
                c, portal_id, brand_id, content_id, ContentInput(**body.model_dump())
            )
        )
    return content.as_json()


@router.get("/brands/{brand_id}/contents/{content_id}")
async def get_content(
    request: Request, brand_id: int, content_id: int
) -> dict[str, Any]:
    """One content."""
    portal_id = await _brand(request, brand_id)
    async with runtime_of(request).db.connect() as conn, _answers():
        content = await content_store.get_content(conn, portal_id, brand_id, content_id)
    return content.as_json()


class CampaignBody(BaseModel):
    """A campaign."""

    name: str = Field(min_length=1, max_length=200)


@router.post("/brands/{brand_id}/campaigns", status_code=201)
async def create_campaign(
    request: Request, brand_id: int, body: CampaignBody
) -> dict[str, Any]:
    """Create a campaign, for campaign mails."""
    portal_id = await _brand(request, brand_id)

    async def insert(conn: AsyncConnection) -> int:
        result = await conn.execute(
            campaigns.insert()
            .values(
                portal_id=portal_id,
                brand_id=brand_id,
                name=body.name.strip(),
                created_at=time.time(),
            )
            .returning(campaigns.c.id)
        )
        return int(result.scalar_one())

    campaign_id = await runtime_of(request).committer.run(insert)
    return {"id": campaign_id, "name": body.name.strip()}


# --- Triggers. ---


class TriggerBody(BaseModel):
    """A trigger: content, customer key, mapping and options."""

    name: str
    content_id: int
    customer_key: Literal["external_id", "email", "customer_id"]
    customer: dict[str, Any] = Field(default_factory=dict)
    variables: dict[str, Any] = Field(default_factory=dict)
    dedupe_path: str = ""
    mailing_type: str = ""
    test_mailing: bool = False
    create_customers: bool = True


@router.post("/brands/{brand_id}/triggers", status_code=201)
async def create_trigger_route(
    request: Request, brand_id: int, body: TriggerBody
) -> dict[str, Any]:
    """Create a trigger; its secret is in this answer only."""
    portal_id = await _brand(request, brand_id)
    values = TriggerInput(**body.model_dump())
    async with _answers():
        check_trigger_input(values)
        trigger, secret = await runtime_of(request).committer.run(
            lambda c: create_trigger(c, portal_id, brand_id, values)
        )
    return {**trigger.as_json(), "secret": secret}


@router.post("/triggers/{trigger}", tags=["webhook"])
async def call_trigger(request: Request, trigger: str) -> JSONResponse:
    """Pega's call: map its JSON, send one SINGLEMAIL, answer after the event is
    recorded. A repeated call with the same dedupe value answers 200 and sends
    nothing."""
    runtime = runtime_of(request)
    mailing = mailing_of(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    service = TriggerService(runtime.db, runtime.committer, mailing.sender)
    async with _answers():
        result = await service.call(
            trigger, request.headers.get("authorization", ""), body
        )
    return JSONResponse(
        status_code=200 if result.duplicate else 201, content=result.as_json()
    )


# --- Sends. ---


class SendBody(BaseModel):
    """A send: single (one customer), quick or campaign mail (a list or everyone)."""

    event_type: Literal["SINGLEMAIL", "QUICKMAIL", "CAMPAIGNMAIL"]
    content_id: int
    customer_ids: list[int] | None = None
    campaign_id: int = 0
    campaign_object_id: int = 0
    mailing_type: str = ""
    test_mailing: bool = False
    address_override: str = ""
    manual_options: dict[str, ManualValue] = Field(default_factory=dict)
    hourly_limit: int = Field(default=0, ge=0)


@router.post("/brands/{brand_id}/sends", status_code=202)
async def create_send(request: Request, brand_id: int, body: SendBody) -> JSONResponse:
    """Start a send. A SINGLEMAIL (one customer id) answers 201 once sent and
    recorded; a bulk send answers 202 at once and runs in the background."""
    portal_id = await _brand(request, brand_id)
    mailing = mailing_of(request)
    spec = SendSpec(portal_id=portal_id, brand_id=brand_id, **body.model_dump())

    async with _answers():
        if body.event_type == "SINGLEMAIL":
            if not body.customer_ids or len(body.customer_ids) != 1:
                raise MailingError("a SINGLEMAIL goes to one customer", "customer_ids")
            broadcast_id, summary = await mailing.sender.send_single(
                spec, body.customer_ids[0]
            )
            return JSONResponse(
                status_code=201,
                content={**summary.as_json(), "broadcast_id": broadcast_id},
            )
        send_id = await mailing.sender.create_send(spec)

    _run_in_background(request, mailing, send_id)
    return JSONResponse(status_code=202, content={"id": send_id, "state": "running"})


@router.get("/sends/{send_id}")
async def get_send(request: Request, send_id: int) -> dict[str, Any]:
    """A send's state and report (sent, bounced, skipped by reason)."""
    portal_id = await portal_of_request(request)
    async with _answers():
        summary = await mailing_of(request).sender.summary(portal_id, send_id)
    return summary.as_json()


@router.post("/sends/{send_id}/resume", status_code=202)
async def resume_send(request: Request, send_id: int) -> dict[str, Any]:
    """Continue a send that stopped (relay down, process ended)."""
    portal_id = await portal_of_request(request)
    mailing = mailing_of(request)
    async with _answers():
        await mailing.sender.summary(portal_id, send_id)
    _run_in_background(request, mailing, send_id)
    return {"id": send_id, "state": "running"}


def _run_in_background(request: Request, mailing: Mailing, send_id: int) -> None:
    tasks: set[asyncio.Task[Any]] = request.app.state.mailing_tasks

    async def run() -> None:
        try:
            await mailing.sender.run_send(send_id)
        except MailingError as exc:
            log.warning(
                "background send stopped",
                extra={
                    "event": "mailing.background_failed",
                    "send_id": send_id,
                    "error": exc.message[:200],
                },
            )
        except Exception:
            log.exception(
                "background send crashed",
                extra={"event": "mailing.background_crashed", "send_id": send_id},
            )

    task = asyncio.get_running_loop().create_task(run(), name=f"send-{send_id}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)
