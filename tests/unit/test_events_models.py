"""The eight metric models against the spec tables and the schema files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pegabridge.events.ingest import accept_activity
from pegabridge.events.models import EVENT_MODELS
from pegabridge.events.schema import render_schema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"
METRICS = sorted(EVENT_MODELS)

# The Python types a JSON value of each type of the spec's tables decodes to.
JSON_TYPES: dict[str, tuple[type | None, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array of strings": (list,),
    "number or null": (int, float, type(None)),
}


def minimal(metric: str) -> dict[str, Any]:
    return {
        "uuid": "21f37d1f-3525-4ebf-8142-74773dc7d9cd",
        "metric": metric,
        "metric_timestamp": 1589354145,
        "portal_id": 1746,
        "brand_id": 1,
    }


def is_of_json_type(value: object, json_type: str) -> bool:
    wanted = JSON_TYPES[json_type]
    if isinstance(value, bool):
        return bool in wanted
    return isinstance(value, tuple(t for t in wanted if t is not None))


@pytest.mark.parametrize("metric", METRICS)
def test_each_model_has_exactly_the_fields_of_the_spec_tables_in_their_order(
    metric: str, spec_fields: dict[str, list[tuple[str, str]]]
) -> None:
    expected = [name for name, _ in spec_fields[metric]]

    assert list(EVENT_MODELS[metric].model_fields) == expected


@pytest.mark.parametrize("metric", METRICS)
def test_each_field_of_a_message_has_the_json_type_of_the_spec(
    metric: str, spec_fields: dict[str, list[tuple[str, str]]]
) -> None:
    event = accept_activity(minimal(metric), None).event
    sent = json.loads(event.to_json())

    wrong = {
        name: (json_type, sent[name])
        for name, json_type in spec_fields[metric]
        if not is_of_json_type(sent[name], json_type)
    }

    assert wrong == {}


def test_the_spec_names_all_eight_metrics_and_no_other(
    spec_fields: dict[str, list[tuple[str, str]]],
) -> None:
    assert sorted(spec_fields) == METRICS


@pytest.mark.parametrize("metric", METRICS)
def test_the_committed_schema_file_is_what_the_model_generates(metric: str) -> None:
    path = SCHEMA_DIR / f"{metric}.schema.json"
    committed = path.read_text(encoding="utf-8") if path.exists() else ""

    assert committed == render_schema(metric), (
        f"{path} drifted from the model; regenerate with `make schema`"
    )


@pytest.mark.parametrize("metric", METRICS)
def test_the_schema_requires_every_field_of_the_message(metric: str) -> None:
    schema = json.loads(render_schema(metric))

    assert sorted(schema["required"]) == sorted(EVENT_MODELS[metric].model_fields)


# --- Any accepted activity is sent with exactly the model's keys. ---

_COUNT = st.integers(min_value=0, max_value=2**53)
_TEXT = st.text(max_size=20)
_MANUAL = st.dictionaries(
    _TEXT,
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    max_size=4,
)
_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "portal_name": _TEXT,
    "customer_id": _COUNT,
    "external_id": _TEXT,
    "email_address": st.emails(),
    "email_address_override": st.booleans(),
    "broadcast_id": _COUNT,
    "broadcast_type": st.sampled_from(["MAIL", "SMS", "PUSH", ""]),
    "broadcast_event_type": st.sampled_from(
        ["QUICKMAIL", "SINGLEMAIL", "CAMPAIGNMAIL", "EMAIL"]
    ),
    "sub_type": st.sampled_from(["CAMPAIGN", "QUICKMAIL", "SINGLEMAIL"]),
    "subject": _TEXT,
    "test_mailing": st.booleans(),
    "broadcast_manual_options": _MANUAL,
}
_PER_METRIC: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "opens": {"user_agent": _TEXT, "machine_generated": st.booleans()},
    "clicks": {"url": _TEXT, "tags": st.lists(_TEXT, max_size=3), "link_id": _COUNT},
    "short_links": {"alt": _TEXT, "os": _TEXT},
    "bounces": {
        "bounce_type": st.sampled_from(["hard", "soft", "HARD", "Soft"]),
        "bounce_count_soft": _COUNT,
    },
    "complaints": {"complaints": _COUNT},
    "conversions": {
        "conversion_value": st.none() | _COUNT | st.floats(allow_nan=False),
        "conversion_currency": st.sampled_from(["EUR", ""]),
    },
}


@st.composite
def activities(draw: st.DrawFn) -> dict[str, Any]:
    metric = draw(st.sampled_from(METRICS))
    optional = {**_OPTIONAL, **_PER_METRIC.get(metric, {})}
    extra = draw(st.fixed_dictionaries({}, optional=optional))
    if extra.get("broadcast_event_type") == "EMAIL":
        # EMAIL only names a type together with a sub_type (spec); alone it is refused.
        extra["sub_type"] = draw(_OPTIONAL["sub_type"])
    return {**minimal(metric), **extra}


@settings(max_examples=200, deadline=None)
@given(activities())
def test_any_accepted_activity_is_sent_with_exactly_the_model_keys(
    raw: dict[str, Any],
) -> None:
    event = accept_activity(raw, 1746).event

    sent = json.loads(event.to_json())

    assert list(sent) == list(EVENT_MODELS[raw["metric"]].model_fields)
