"""Reading activities handed in by other systems into events of the contract.

The ingest side accepts the variants the source document's own JSON examples use (see
"Accepting the source's own examples" in the spec) and refuses anything else with an
error per field, so that a sender learns exactly what to fix.
"""

from __future__ import annotations

import json
import re
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pegabridge.events.models import EVENT_MODELS, BaseEvent

# The fields without which an activity cannot be placed or ordered.
REQUIRED_FIELDS = ("metric", "metric_timestamp", "portal_id", "brand_id")

_EVENT_TYPE_OF_SUB_TYPE = {
    "CAMPAIGN": "CAMPAIGNMAIL",
    "SINGLEMAIL": "SINGLEMAIL",
    "QUICKMAIL": "QUICKMAIL",
}
_SUB_TYPE_OF_EVENT_TYPE = {
    "CAMPAIGNMAIL": "CAMPAIGN",
    "SINGLEMAIL": "SINGLEMAIL",
    "QUICKMAIL": "QUICKMAIL",
}

# Pega's InteractionId is a signed 64-bit number; as a JSON number it would lose
# digits in many JSON readers, so it always travels as a string.
_STRING_OPTIONS = ("InteractionId",)

# A JSON escape of a UTF-16 surrogate: only these can put a lone surrogate into the
# decoded text (valid UTF-8 bytes never do), so the costly check runs only when present.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class FieldError:
    """One reason why an activity was refused."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass
class ActivityRefused(Exception):
    """An activity that does not fit the contract; ``errors`` names every problem."""

    errors: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{e.field}: {e.message}" for e in self.errors)


@dataclass(frozen=True)
class Accepted:
    """A valid activity, and whether the sender chose its ``metric_id``."""

    event: BaseEvent
    has_metric_id: bool


class BodyError(ValueError):
    """The request body is not JSON, a JSON array, or NDJSON."""


def parse_body(body: bytes, content_type: str = "") -> list[Any]:
    """Split a request body into activities: one object, an array, or NDJSON lines."""
    text = _decode(body)
    if not text.strip():
        raise BodyError("the body is empty; send one activity, a JSON array or NDJSON")

    try:
        activities = _activities(text, content_type)
    except RecursionError:
        raise BodyError("the body is nested too deeply to be an activity") from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(activities)
    return activities


def _activities(text: str, content_type: str) -> list[Any]:
    if "ndjson" in content_type or "jsonlines" in content_type:
        return list(_ndjson(text))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n" in text.strip():
            return list(_ndjson(text))
        raise BodyError(f"the body is not valid JSON: {exc}") from None

    if isinstance(document, list):
        return document
    return [document]


def _refuse_lone_surrogates(activities: list[Any]) -> None:
    # A \ud800 escape without its pair decodes to text that cannot be written as
    # UTF-8, so the event could never be sent; paired escapes (emoji) are fine.
    try:
        json.dumps(activities, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(
            "the body holds a \\u escape of a lone UTF-16 surrogate, which is not text"
        ) from None


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BodyError(f"the body is not UTF-8 (byte {exc.start})") from None


def _ndjson(text: str) -> Iterator[Any]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise BodyError(f"line {number} is not valid JSON: {exc}") from None


def accept_activity(raw: Any, portal_id: int | None) -> Accepted:
    """Turn one handed-in activity into an event, or raise :class:`ActivityRefused`.

    ``portal_id`` is the portal of the API key; an activity of another portal is
    refused. ``None`` skips that check (a file import by the operator).
    """
    if not isinstance(raw, dict):
        raise ActivityRefused([FieldError("", "each activity must be a JSON object")])

    data = dict(raw)
    _check_required(data)
    model = EVENT_MODELS[data["metric"]]
    if _is_other_portal(data["portal_id"], portal_id):
        raise ActivityRefused(
            [FieldError("portal_id", f"this API key belongs to portal {portal_id}")]
        )

    _accept_source_variants(data)
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        raise ActivityRefused(_field_errors(exc, data["metric"])) from None

    return Accepted(event=event, has_metric_id="metric_id" in raw)


def _is_other_portal(given: Any, portal_id: int | None) -> bool:
    # A portal_id of the wrong type is left to the model, which names the type.
    if portal_id is None or not isinstance(given, int) or isinstance(given, bool):
        return False
    return given != portal_id


def _check_required(data: dict[str, Any]) -> None:
    errors = [
        FieldError(name, "this field is required")
        for name in REQUIRED_FIELDS
        if name not in data
    ]
    metric = data.get("metric")
    if "metric" in data and (not isinstance(metric, str) or metric not in EVENT_MODELS):
        known = ", ".join(EVENT_MODELS)
        errors.append(
            FieldError("metric", f"unknown metric {metric!r}; one of {known}")
        )
    if errors:
        raise ActivityRefused(errors)


def _accept_source_variants(data: dict[str, Any]) -> None:
    if isinstance(data.get("bounce_type"), str):
        data["bounce_type"] = data["bounce_type"].upper()

    sub_type = data.get("sub_type")
    event_type = data.get("broadcast_event_type")
    if event_type == "EMAIL" and sub_type in _EVENT_TYPE_OF_SUB_TYPE:
        data["broadcast_event_type"] = _EVENT_TYPE_OF_SUB_TYPE[sub_type]
    elif "sub_type" not in data and event_type in _SUB_TYPE_OF_EVENT_TYPE:
        data["sub_type"] = _SUB_TYPE_OF_EVENT_TYPE[event_type]

    if "uuid" not in data:
        data["uuid"] = str(uuidlib.uuid4())
    elif isinstance(data["uuid"], str):
        data["uuid"] = _canonical_uuid(data["uuid"])

    domain = data.get("email_domain")
    if isinstance(domain, str):
        data["email_domain"] = domain.lower()
    address = data.get("email_address")
    if not domain and isinstance(address, str) and "@" in address:
        data["email_domain"] = address.rsplit("@", 1)[1].lower()

    options = data.get("broadcast_manual_options")
    if isinstance(options, dict):
        data["broadcast_manual_options"] = _options_as_sent(options)


def _canonical_uuid(text: str) -> str:
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        return text  # the model refuses it with a clear message


def _options_as_sent(options: dict[str, Any]) -> dict[str, Any]:
    fixed = dict(options)
    for name in _STRING_OPTIONS:
        value = fixed.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            fixed[name] = str(value)
    return fixed


def _field_errors(exc: ValidationError, metric: str) -> list[FieldError]:
    errors = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            message = f"not a field of {metric} events"
        elif error["type"] == "string_pattern_mismatch" and path == "uuid":
            message = "must be a UUID like 21f37d1f-3525-4ebf-8142-74773dc7d9cd"
        else:
            message = error["msg"]
        errors.append(FieldError(path, message))
    return errors
