"""Building events from platform records, the same way in every package.

A personal send (a broadcast) is described once, when it goes out, by its *context*:
the basic fields every event of that broadcast carries (portal, brand, customer,
addresses, campaign, content, subject as sent, mailing type, test flag and the manual
options). Mailing stores that context as JSON in ``broadcasts.context``; tracking and
feedback read it back to build the opens, clicks, bounces and unsubscribes of the same
email, so that every event of one broadcast describes the email as it was sent.

Build an event with::

    OpenEvent(
        uuid=str(uuid.uuid4()),
        metric="opens",
        metric_timestamp=int(time.time()),
        **base_fields_from_context(context),
        user_agent=...,
    )
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal, TypeVar

from pegabridge.events.models import (
    METRIC_OF_MODEL,
    BaseEvent,
    BroadcastEvent,
    ManualValue,
)

EventType = Literal["QUICKMAIL", "SINGLEMAIL", "CAMPAIGNMAIL"]

E = TypeVar("E", bound=BaseEvent)

# The basic fields of BaseEvent that describe the broadcast, not the activity.
CONTEXT_FIELDS: tuple[str, ...] = tuple(
    name
    for name in BaseEvent.model_fields
    if name not in ("uuid", "metric", "metric_timestamp", "metric_id")
)


def email_domain(address: str) -> str:
    """The domain part of ``address`` in lower case; ``""`` without an ``@``."""
    _, at, domain = address.rpartition("@")
    return domain.lower() if at else ""


def broadcast_context(
    *,
    portal_id: int,
    portal_name: str,
    brand_id: int,
    brand_name: str,
    customer_id: int,
    external_id: str,
    customer_email_address: str,
    email_address: str,
    broadcast_id: int,
    broadcast_timestamp: int,
    event_type: EventType,
    campaign_id: int = 0,
    campaign_name: str = "",
    campaign_object_id: int = 0,
    content_id: int,
    content_name: str,
    subject: str,
    mailing_type: str = "",
    test_mailing: bool = False,
    manual_options: dict[str, ManualValue] | None = None,
) -> dict[str, Any]:
    """The basic fields of every event of one broadcast, as a JSON-ready dict.

    ``email_address`` is where the email really went; when it differs from the
    customer's own address the override flag is set. ``sub_type`` is ``CAMPAIGN`` for a
    campaign send, else the event type itself (spec: "Fields every event carries").
    """
    return {
        "portal_id": portal_id,
        "portal_name": portal_name,
        "brand_id": brand_id,
        "brand_name": brand_name,
        "customer_id": customer_id,
        "external_id": external_id,
        "customer_email_address": customer_email_address,
        "email_address": email_address,
        "email_domain": email_domain(email_address),
        "email_address_override": email_address.lower()
        != customer_email_address.lower(),
        "broadcast_id": broadcast_id,
        "broadcast_timestamp": broadcast_timestamp,
        "broadcast_type": "MAIL",
        "broadcast_event_type": event_type,
        "sub_type": "CAMPAIGN" if event_type == "CAMPAIGNMAIL" else event_type,
        "campaign_id": campaign_id,
        "campaign_name": campaign_name,
        "campaign_object_id": campaign_object_id,
        "content_id": content_id,
        "content_name": content_name,
        "subject": subject,
        "mailing_type": mailing_type,
        "test_mailing": test_mailing,
        "broadcast_manual_options": dict(manual_options or {}),
    }


def base_fields_from_context(context: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for any event model from a stored broadcast context.

    Keys that are not basic fields are left out, so a context written by a newer
    version still builds events; a missing key takes the model's empty value.
    """
    return {name: context[name] for name in CONTEXT_FIELDS if name in context}


def context_to_json(context: dict[str, Any]) -> str:
    """The stored form of a context (``broadcasts.context``)."""
    return json.dumps(context, ensure_ascii=False, separators=(",", ":"))


def context_from_json(text: str) -> dict[str, Any]:
    """A context read back from ``broadcasts.context``."""
    document = json.loads(text or "{}")
    if not isinstance(document, dict):
        raise ValueError("a broadcast context is a JSON object")
    return document


def build_event(
    model: type[E],
    context: dict[str, Any],
    *,
    metric_timestamp: int,
    event_uuid: str | None = None,
    **fields: Any,
) -> E:
    """An event of ``model`` for the broadcast of ``context`` with its own fields.

    ``event_uuid`` is made here when not given; give it when the activity was already
    recorded once (a retry must carry the same uuid).
    """
    return model(
        uuid=event_uuid or str(uuid.uuid4()),
        metric=METRIC_OF_MODEL[model],
        metric_timestamp=metric_timestamp,
        **base_fields_from_context(context),
        **fields,
    )


def broadcast_event(
    context: dict[str, Any], *, event_uuid: str, sent_at: float
) -> BroadcastEvent:
    """The ``broadcasts`` event of one personal send."""
    return build_event(
        BroadcastEvent,
        context,
        metric_timestamp=int(sent_at),
        event_uuid=event_uuid,
    )
