"""The Pega trigger webhook: a decision in Pega becomes one personal email.

A trigger is configured per brand with a content, the customer field that identifies
the customer, and a mapping from paths of Pega's JSON to customer fields and manual
variables. Each accepted call sends one ``SINGLEMAIL``. Values are kept as the text
Pega wrote: a number such as ``-563481321460449721`` is taken digit for digit, never
through a float. A call is checked completely before anything is stored or sent.

An optional dedupe path makes a repeated call (same value there) send once: the repeat
answers with the first call's broadcast. A call that failed at the relay can be
repeated and then resumes the same send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pegabridge.events.models import ManualValue
from pegabridge.mailing.contents import get_content
from pegabridge.mailing.customers import (
    CUSTOMER_KEYS,
    Customer,
    CustomerInput,
    create_customer,
    find_customer,
    not_mailable_reason,
)
from pegabridge.mailing.errors import Conflict, MailingError, NotFound, SendFailed
from pegabridge.mailing.jsonpath import Missing, PathError, Step, parse_path, resolve
from pegabridge.mailing.sends import Sender, SendSpec
from pegabridge.store.tables import trigger_calls, triggers
from pegabridge.store.writer import GroupCommitter

CUSTOMER_FIELDS = ("email", "external_id", "first_name", "last_name", "customer_id")
MAX_BODY_BYTES = 1024 * 1024


class Unauthorized(MailingError):
    """The call does not carry this trigger's secret."""

    status = 401


@dataclass
class TriggerInput:
    """A trigger's configuration as given by its owner."""

    name: str
    content_id: int
    customer_key: str
    customer: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    dedupe_path: str = ""
    mailing_type: str = ""
    test_mailing: bool = False
    create_customers: bool = True


@dataclass(frozen=True)
class _Mapped:
    path: str
    steps: tuple[Step, ...]
    required: bool


@dataclass(frozen=True)
class Trigger:
    """A stored trigger with its parsed mapping."""

    id: int
    portal_id: int
    brand_id: int
    name: str
    secret_hash: str
    content_id: int
    customer_key: str
    customer: dict[str, _Mapped]
    variables: dict[str, _Mapped]
    dedupe: _Mapped | None
    mailing_type: str
    test_mailing: bool
    create_customers: bool
    active: bool

    def as_json(self) -> dict[str, Any]:
        """The trigger as the API shows it (never its secret)."""
        return {
            "id": self.id,
            "name": self.name,
            "brand_id": self.brand_id,
            "content_id": self.content_id,
            "customer_key": self.customer_key,
            "mapping": {
                "customer": {k: _mapped_json(m) for k, m in self.customer.items()},
                "variables": {k: _mapped_json(m) for k, m in self.variables.items()},
            },
            "dedupe_path": self.dedupe.path if self.dedupe else "",
            "mailing_type": self.mailing_type,
            "test_mailing": self.test_mailing,
            "create_customers": self.create_customers,
            "active": self.active,
        }


@dataclass(frozen=True)
class CallResult:
    """What a trigger call did."""

    broadcast_id: int
    send_id: int
    customer_id: int
    duplicate: bool = False

    def as_json(self) -> dict[str, Any]:
        """The answer to Pega."""
        return {
            "broadcast_id": self.broadcast_id,
            "send_id": self.send_id,
            "customer_id": self.customer_id,
            "duplicate": self.duplicate,
        }


def _mapped_json(mapped: _Mapped) -> Any:
    return mapped.path if mapped.required else {"path": mapped.path, "required": False}


def _parse_mapped(name: str, value: Any) -> _Mapped:
    if isinstance(value, str):
        path, required = value, True
    elif isinstance(value, dict) and isinstance(value.get("path"), str):
        path, required = value["path"], bool(value.get("required", True))
    else:
        raise MailingError(
            f"the mapping of {name!r} must be a path like '$.Offer.Id' or "
            '{"path": ..., "required": false}',
            "mapping",
        )
    try:
        return _Mapped(path.strip(), parse_path(path), required)
    except PathError as exc:
        raise MailingError(f"mapping of {name!r}: {exc}", "mapping") from exc


def hash_secret(secret: str) -> str:
    """The stored form of a trigger secret (random and long, so SHA-256 suffices)."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_trigger(
    conn: AsyncConnection, portal_id: int, brand_id: int, values: TriggerInput
) -> tuple[Trigger, str]:
    """Check and store a trigger; returns it and its secret (shown only now)."""
    name = values.name.strip()
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
        raise MailingError(
            "a trigger name is 1-100 letters, digits, '-', '_' or '.'", "name"
        )
    if await conn.scalar(select(triggers.c.id).where(triggers.c.name == name)):
        raise Conflict(f"a trigger named {name!r} exists already", "name")
    mapping = _checked_mapping(values)
    content = await get_content(conn, portal_id, brand_id, values.content_id)
    undeclared = sorted(set(values.variables) - set(content.variables))
    if undeclared:
        raise MailingError(
            f"content {content.id} declares no manual variable {undeclared}; declare "
            "them on the content first",
            "mapping",
        )

    secret = secrets.token_urlsafe(32)
    now = time.time()
    await conn.execute(
        triggers.insert().values(
            portal_id=portal_id,
            brand_id=brand_id,
            name=name,
            secret_hash=hash_secret(secret),
            content_id=values.content_id,
            customer_key=values.customer_key,
            mapping=json.dumps(mapping, ensure_ascii=False),
            dedupe_path=values.dedupe_path.strip(),
            mailing_type=values.mailing_type.strip(),
            test_mailing=values.test_mailing,
            create_customers=values.create_customers,
            active=True,
            created_at=now,
            updated_at=now,
        )
    )
    return await get_trigger(conn, name), secret


def check_trigger_input(values: TriggerInput) -> None:
    """Refuse a trigger whose mapping cannot work, before a transaction opens."""
    _checked_mapping(values)


def _checked_mapping(values: TriggerInput) -> dict[str, Any]:
    if values.customer_key not in CUSTOMER_KEYS:
        raise MailingError(
            f"the customer key is one of {CUSTOMER_KEYS}", "customer_key"
        )
    for name in values.customer:
        if name not in CUSTOMER_FIELDS and not name.startswith("fields."):
            raise MailingError(
                f"{name!r} is not a customer field; use one of {CUSTOMER_FIELDS} or "
                "fields.<name>",
                "mapping",
            )
    if values.customer_key not in values.customer:
        raise MailingError(
            f"the mapping must say where the customer's {values.customer_key} is",
            "mapping",
        )
    for name, value in {**values.customer, **values.variables}.items():
        _parse_mapped(name, value)
    if values.dedupe_path:
        _parse_mapped("dedupe", values.dedupe_path)
    return {"customer": values.customer, "variables": values.variables}


async def get_trigger(conn: AsyncConnection, name: str) -> Trigger:
    """The trigger called ``name``; :class:`NotFound` otherwise."""
    row = (await conn.execute(select(triggers).where(triggers.c.name == name))).first()
    if row is None:
        raise NotFound(f"there is no trigger {name!r}", "trigger")
    m = row._mapping
    mapping = json.loads(m["mapping"] or "{}")
    return Trigger(
        id=int(m["id"]),
        portal_id=int(m["portal_id"]),
        brand_id=int(m["brand_id"]),
        name=m["name"],
        secret_hash=m["secret_hash"],
        content_id=int(m["content_id"]),
        customer_key=m["customer_key"],
        customer={k: _parse_mapped(k, v) for k, v in mapping["customer"].items()},
        variables={k: _parse_mapped(k, v) for k, v in mapping["variables"].items()},
        dedupe=_parse_mapped("dedupe", m["dedupe_path"]) if m["dedupe_path"] else None,
        mailing_type=m["mailing_type"],
        test_mailing=bool(m["test_mailing"]),
        create_customers=bool(m["create_customers"]),
        active=bool(m["active"]),
    )


WRONG_SECRET = (
    "send the trigger's secret as 'Authorization: Bearer <secret>' or as "
    "Basic auth with the trigger name as user"
)


def check_secret(trigger: Trigger, authorization: str) -> None:
    """Accept ``Bearer <secret>`` or Basic ``<trigger name>:<secret>``."""
    scheme, _, credentials = authorization.partition(" ")
    secret = ""
    if scheme.lower() == "bearer":
        secret = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, _, secret = decoded.partition(":")
        if user != trigger.name:
            secret = ""
    if not secret or not hmac.compare_digest(hash_secret(secret), trigger.secret_hash):
        raise Unauthorized(WRONG_SECRET, "authorization")


def parse_pega_body(body: bytes) -> dict[str, Any]:
    """Pega's JSON with every number kept as the text it was written as."""
    if len(body) > MAX_BODY_BYTES:
        raise MailingError(f"the body is larger than {MAX_BODY_BYTES} bytes", "body")
    try:
        document = json.loads(body, parse_int=str, parse_float=str)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MailingError(f"the body is not JSON: {exc}", "body") from exc
    except RecursionError:
        raise MailingError("the body is nested too deeply to be read", "body") from None
    if not isinstance(document, dict):
        raise MailingError("the body must be a JSON object", "body")
    return document


@dataclass(frozen=True)
class _Extracted:
    customer: dict[str, str]
    variables: dict[str, ManualValue]
    dedupe_key: str


def extract(trigger: Trigger, document: dict[str, Any]) -> _Extracted:
    """The mapped values of a call; every missing required value is named at once."""
    missing: list[str] = []
    customer = _pick_all(trigger.customer, document, missing)
    variables = _pick_all(trigger.variables, document, missing)
    dedupe_key = ""
    if trigger.dedupe is not None:
        picked = _pick_all({"dedupe key": trigger.dedupe}, document, missing)
        dedupe_key = str(picked.get("dedupe key", ""))[:400]
    if missing:
        raise MailingError(
            "the body has no value at " + ", ".join(missing) + "; nothing was sent",
            "body",
        )
    if not str(customer.get(trigger.customer_key, "")).strip():
        raise MailingError(
            f"the customer's {trigger.customer_key} is empty in the body; nothing was "
            "sent",
            "body",
        )
    return _Extracted(
        {k: "" if v is None else str(v) for k, v in customer.items()},
        variables,
        dedupe_key,
    )


def _pick_all(
    mapping: dict[str, _Mapped], document: dict[str, Any], missing: list[str]
) -> dict[str, ManualValue]:
    picked: dict[str, ManualValue] = {}
    for name, mapped in mapping.items():
        try:
            value = resolve(document, mapped.steps)
        except Missing:
            if mapped.required:
                missing.append(f"{mapped.path} (for {name})")
            continue
        if isinstance(value, dict | list):
            missing.append(f"{mapped.path} (for {name}: an object, not a value)")
            continue
        if value is not None:
            picked[name] = value
    return picked


class TriggerService:
    """Handles calls of the trigger webhook."""

    def __init__(
        self, db: AsyncEngine, committer: GroupCommitter, sender: Sender
    ) -> None:
        self._db = db
        self._committer = committer
        self._sender = sender

    async def call(self, name: str, authorization: str, body: bytes) -> CallResult:
        """Check, map and send one call; raises :class:`MailingError` subclasses."""
        async with self._db.connect() as conn:
            try:
                trigger = await get_trigger(conn, name)
            except NotFound:
                # Answered as a wrong secret: a caller without one cannot tell
                # which trigger names exist.
                raise Unauthorized(WRONG_SECRET, "authorization") from None
        check_secret(trigger, authorization)
        if not trigger.active:
            raise NotFound(f"trigger {name!r} is switched off", "trigger")
        extracted = extract(trigger, parse_pega_body(body))

        earlier = await self._earlier_call(trigger, extracted.dedupe_key)
        if earlier is not None and earlier["state"] == "sent":
            return CallResult(
                int(earlier["broadcast_id"]),
                int(earlier["send_id"]),
                await self._customer_of(int(earlier["broadcast_id"])),
                duplicate=True,
            )

        customer = await self._customer(trigger, extracted)
        reason = not_mailable_reason(customer)
        if reason is not None:
            raise Conflict(
                f"customer {customer.id} is not mailable ({reason}); nothing was sent",
                "customer",
            )

        if earlier is not None and int(earlier["send_id"]):
            call_id, send_id = int(earlier["id"]), int(earlier["send_id"])
        else:
            call_id, send_id = await self._open_call(trigger, extracted, customer)
        return await self._send(call_id, send_id, customer)

    async def _send(self, call_id: int, send_id: int, customer: Customer) -> CallResult:
        try:
            await self._sender.run_send(send_id)
        except SendFailed as exc:
            error = str(exc)
            await self._committer.run(
                lambda c: _close_call(c, call_id, "failed", 0, error)
            )
            raise
        broadcast_id = await self._sender.broadcast_of(send_id, customer.id)
        await self._committer.run(
            lambda c: _close_call(c, call_id, "sent", broadcast_id, "")
        )
        return CallResult(broadcast_id, send_id, customer.id)

    async def _earlier_call(self, trigger: Trigger, key: str) -> dict[str, Any] | None:
        if not key:
            return None
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    select(trigger_calls).where(
                        trigger_calls.c.trigger_id == trigger.id,
                        trigger_calls.c.dedupe_key == key,
                    )
                )
            ).first()
        return dict(row._mapping) if row is not None else None

    async def _customer_of(self, broadcast_id: int) -> int:
        from pegabridge.store.tables import broadcasts

        async with self._db.connect() as conn:
            found = await conn.scalar(
                select(broadcasts.c.customer_id).where(broadcasts.c.id == broadcast_id)
            )
        return int(found or 0)

    async def _customer(self, trigger: Trigger, extracted: _Extracted) -> Customer:
        key_value = extracted.customer[trigger.customer_key]

        async def find_or_create(conn: AsyncConnection) -> Customer:
            found = await find_customer(
                conn,
                trigger.portal_id,
                trigger.brand_id,
                trigger.customer_key,
                key_value,
            )
            if found is not None:
                return found
            if not trigger.create_customers or "email" not in extracted.customer:
                raise NotFound(
                    f"brand {trigger.brand_id} has no customer with "
                    f"{trigger.customer_key} {key_value!r}; nothing was sent",
                    "customer",
                )
            fields = {
                k.removeprefix("fields."): v
                for k, v in extracted.customer.items()
                if k.startswith("fields.")
            }
            return await create_customer(
                conn,
                trigger.portal_id,
                trigger.brand_id,
                CustomerInput(
                    email=extracted.customer["email"],
                    external_id=extracted.customer.get("external_id", ""),
                    first_name=extracted.customer.get("first_name", ""),
                    last_name=extracted.customer.get("last_name", ""),
                    fields=fields,
                ),
            )

        return await self._committer.run(find_or_create)

    async def _open_call(
        self, trigger: Trigger, extracted: _Extracted, customer: Customer
    ) -> tuple[int, int]:
        spec = SendSpec(
            portal_id=trigger.portal_id,
            brand_id=trigger.brand_id,
            event_type="SINGLEMAIL",
            content_id=trigger.content_id,
            mailing_type=trigger.mailing_type,
            test_mailing=trigger.test_mailing,
            manual_options=dict(extracted.variables),
            customer_ids=[customer.id],
        )
        send_id = await self._sender.create_send(spec)
        try:
            call_id = await self._committer.run(
                lambda c: _insert_call(c, trigger.id, extracted.dedupe_key, send_id)
            )
        except IntegrityError as exc:
            raise Conflict(
                "the same call is being handled right now; repeat it later", "dedupe"
            ) from exc
        return call_id, send_id


async def _insert_call(
    conn: AsyncConnection, trigger_id: int, dedupe_key: str, send_id: int
) -> int:
    result = await conn.execute(
        trigger_calls.insert()
        .values(
            trigger_id=trigger_id,
            dedupe_key=dedupe_key,
            send_id=send_id,
            state="accepted",
            received_at=time.time(),
        )
        .returning(trigger_calls.c.id)
    )
    return int(result.scalar_one())


async def _close_call(
    conn: AsyncConnection, call_id: int, state: str, broadcast_id: int, error: str
) -> None:
    await conn.execute(
        update(trigger_calls)
        .where(trigger_calls.c.id == call_id)
        .values(state=state, broadcast_id=broadcast_id, error=error[:1000])
    )
