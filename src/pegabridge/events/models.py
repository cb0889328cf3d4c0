"""One model per metric of the interaction format (``spec/interaction-format.md``).

The models are the contract with the Pega developer: their fields, in this order and
with these JSON types, are exactly the keys of the JSON message; nothing is left out and
nothing is added. Every field has its empty value as default (``""``, ``0``, ``false``,
``{}``, ``[]``) except the four that identify an activity (``metric``,
``metric_timestamp``, ``portal_id``, ``brand_id``) and ``uuid``, which the recorder
assigns once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

Uuid = Annotated[str, Field(pattern=UUID_PATTERN, description="UUID, lower case")]
# Identifiers and counts are stored as signed 64-bit integers; a larger number is
# refused here, as a field error, rather than failing in the database.
INT64_MAX = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
UnixSeconds = Annotated[int, Field(ge=0, le=INT64_MAX, description="Unix seconds")]
ManualValue: TypeAlias = str | int | float | bool | None

BroadcastType = Literal["MAIL", "SMS", "PUSH", ""]
BroadcastEventType = Literal["QUICKMAIL", "SINGLEMAIL", "CAMPAIGNMAIL", ""]
SubType = Literal["CAMPAIGN", "QUICKMAIL", "SINGLEMAIL", ""]
BounceType = Literal["HARD", "SOFT"]


class BaseEvent(BaseModel):
    """The fields every event carries, whatever its metric."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        json_schema_serialization_defaults_required=True,
    )

    uuid: Uuid
    metric: str
    metric_timestamp: UnixSeconds
    metric_id: Count = 0
    portal_id: Count
    portal_name: str = ""
    brand_id: Count
    brand_name: str = ""
    customer_id: Count = 0
    external_id: str = ""
    customer_email_address: str = ""
    email_address: str = ""
    email_domain: str = ""
    email_address_override: bool = False
    broadcast_id: Count = 0
    broadcast_timestamp: UnixSeconds = 0
    broadcast_type: BroadcastType = ""
    broadcast_event_type: BroadcastEventType = ""
    sub_type: SubType = ""
    campaign_id: Count = 0
    campaign_name: str = ""
    campaign_object_id: Count = 0
    content_id: Count = 0
    content_name: str = ""
    subject: str = ""
    mailing_type: str = ""
    test_mailing: bool = False
    broadcast_manual_options: dict[str, ManualValue] = Field(default_factory=dict)

    def to_json(self) -> str:
        """The JSON message as sent to Pega: compact, UTF-8, keys in contract order."""
        return self.model_dump_json()


class AgentFields(BaseModel):
    """What the request that made an open or a click tells about the customer's side."""

    user_agent: str = ""
    os: str = ""
    browser: str = ""
    machine_generated: bool = False


class LinkFields(BaseModel):
    """The tracked link that was followed."""

    link_id: Count = 0
    url: str = ""
    alt: str = ""
    google_source: str = ""
    google_medium: str = ""
    google_term: str = ""
    google_content: str = ""
    google_campaign: str = ""
    tags: list[str] = Field(default_factory=list)


class BroadcastEvent(BaseEvent):
    """One personal email was sent to one customer."""

    metric: Literal["broadcasts"]
    metric_id: Literal[0] = 0


class OpenEvent(AgentFields, BaseEvent):
    """The open pixel of an email was loaded."""

    metric: Literal["opens"]


class ClickEvent(LinkFields, AgentFields, BaseEvent):
    """A tracked link in a template was followed."""

    metric: Literal["clicks"]


class ShortLinkEvent(LinkFields, AgentFields, BaseEvent):
    """A short link written by hand into the content was followed."""

    metric: Literal["short_links"]


class BounceEvent(BaseEvent):
    """The receiving side reported that the email could not be delivered."""

    metric: Literal["bounces"]
    bounce_code: str = ""
    bounce_reason: str = "other"
    bounce_type: BounceType = "SOFT"
    bounce_count_hard: Count = 0
    bounce_count_soft: Count = 0


class ComplaintEvent(BaseEvent):
    """The customer marked the email as spam."""

    metric: Literal["complaints"]
    complaints: Count = 0


class UnsubscribeEvent(BaseEvent):
    """The customer unsubscribed through the email."""

    metric: Literal["unsubscribes"]


class ConversionEvent(BaseEvent):
    """A goal was reached after the email."""

    metric: Literal["conversions"]
    conversion_name: str = ""
    conversion_value: float | int | None = None
    conversion_currency: str = ""
    conversion_reference: str = ""
    link_id: Count = 0


Event: TypeAlias = Annotated[
    BroadcastEvent
    | OpenEvent
    | ClickEvent
    | ShortLinkEvent
    | BounceEvent
    | ComplaintEvent
    | UnsubscribeEvent
    | ConversionEvent,
    Field(discriminator="metric"),
]

EVENT_MODELS: dict[str, type[BaseEvent]] = {
    "broadcasts": BroadcastEvent,
    "opens": OpenEvent,
    "clicks": ClickEvent,
    "short_links": ShortLinkEvent,
    "bounces": BounceEvent,
    "complaints": ComplaintEvent,
    "unsubscribes": UnsubscribeEvent,
    "conversions": ConversionEvent,
}

METRIC_OF_MODEL: dict[type[BaseEvent], str] = {
    model: metric for metric, model in EVENT_MODELS.items()
}

event_adapter: TypeAdapter[Any] = TypeAdapter(Event)
