"""JSON Schema files of the eight metrics, generated from the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pegabridge.events.models import EVENT_MODELS


def schema_of(metric: str) -> dict[str, Any]:
    """The JSON Schema of one metric's message, as sent (every field present)."""
    schema = EVENT_MODELS[metric].model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://pegabridge.invalid/schema/{metric}.json"
    return schema


def render_schema(metric: str) -> str:
    """The schema file's text: stable key order and a final newline."""
    return json.dumps(schema_of(metric), indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write one ``<metric>.schema.json`` per metric into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in EVENT_MODELS:
        path = folder / f"{metric}.schema.json"
        path.write_text(render_schema(metric), encoding="utf-8")
        written.append(path)
    return written
