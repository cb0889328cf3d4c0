"""Google Analytics (UTM) fields of a click: from the link, else from its URL.

The `google_*` fields of a click event are the values set on the link in the platform;
a field the link leaves empty is taken from the destination URL's `utm_*` parameter.
Links that passed through a mail security gateway are wrapped in the gateway's own URL,
so the destination is unwrapped first: Microsoft Safe Links, Proofpoint URL Defense v2
and v3, also nested. Nothing here raises on odd input: a URL that cannot be read gives
empty values.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_UNWRAP_DEPTH: Final = 5
MAX_URL_LENGTH: Final = 16_384

UTM_FIELDS: Final[dict[str, str]] = {
    "utm_source": "google_source",
    "utm_medium": "google_medium",
    "utm_term": "google_term",
    "utm_content": "google_content",
    "utm_campaign": "google_campaign",
}

# Proofpoint v3 puts characters it cannot leave in the URL into a base64 block after
# the URL, marking each place with `*` (one character) or `**` plus a letter giving a
# run length (A = 2, B = 3, ...).
_PROOFPOINT_V3: Final = re.compile(r"/v3/__(?P<url>.+?)__;(?P<chars>[A-Za-z0-9_-]*)!")
_PROOFPOINT_V3_MARK: Final = re.compile(r"\*(\*.)?")
_RUN_LENGTH_CODES: Final = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)


@dataclass(frozen=True, slots=True)
class GoogleFields:
    """The five `google_*` fields of a click event; `""` when unknown."""

    google_source: str = ""
    google_medium: str = ""
    google_term: str = ""
    google_content: str = ""
    google_campaign: str = ""

    def as_dict(self) -> dict[str, str]:
        """The fields by their event names."""
        return {name: getattr(self, name) for name in UTM_FIELDS.values()}


def google_fields(
    url: str, link_values: Mapping[str, str] | None = None
) -> GoogleFields:
    """The `google_*` fields for a click on `url`.

    `link_values` holds what was set on the link in the platform, by event name
    (`google_source`, ...); a non-empty value there wins over the URL's parameter.
    """
    found = utm_parameters(url)
    chosen = link_values or {}
    merged = {
        name: chosen.get(name) or found.get(name, "") for name in UTM_FIELDS.values()
    }
    return GoogleFields(**merged)


def utm_parameters(url: str) -> dict[str, str]:
    """The `utm_*` parameters of `url` (unwrapped), by event name; first value wins."""
    try:
        query = urlsplit(unwrap_url(url)[:MAX_URL_LENGTH]).query
        pairs = parse_qsl(query, keep_blank_values=False, errors="replace")
    except ValueError:
        return {}

    found: dict[str, str] = {}
    for key, value in pairs:
        name = UTM_FIELDS.get(key.strip().lower())
        if name and name not in found and value.strip():
            found[name] = value.strip()
    return found


def unwrap_url(url: str) -> str:
    """The destination inside a link scanner's wrapped URL, or `url` itself.

    Unwraps Microsoft Safe Links and Proofpoint URL Defense v2 and v3, up to
    `MAX_UNWRAP_DEPTH` layers; a layer that cannot be decoded is left as it is.
    """
    current = url[:MAX_URL_LENGTH]
    for _ in range(MAX_UNWRAP_DEPTH):
        inner = _unwrap_once(current)
        if inner is None or inner == current:
            return current
        current = inner
    return current


def _unwrap_once(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return None

    if host.endswith(".safelinks.protection.outlook.com"):
        return _query_value(parts.query, "url")
    if host == "urldefense.proofpoint.com" and parts.path.startswith("/v2/url"):
        encoded = _query_value(parts.query, "u")
        return None if encoded is None else _decode_proofpoint_v2(encoded)
    if host in ("urldefense.com", "urldefense.proofpoint.com"):
        return _decode_proofpoint_v3(url)
    return None


def _query_value(query: str, key: str) -> str | None:
    for name, value in parse_qsl(query, errors="replace"):
        if name == key and value:
            return value
    return None


def _decode_proofpoint_v2(encoded: str) -> str:
    # v2 percent-encodes with `-` in place of `%` and writes `/` as `_`.
    return unquote(encoded.replace("-", "%").replace("_", "/"), errors="replace")


def _decode_proofpoint_v3(url: str) -> str | None:
    match = _PROOFPOINT_V3.search(url)
    if match is None:
        return None

    chars_b64 = match.group("chars")
    try:
        raw = base64.urlsafe_b64decode(chars_b64 + "=" * (-len(chars_b64) % 4))
        replaced = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None

    position = 0

    def restore(mark: re.Match[str]) -> str:
        nonlocal position
        run = mark.group(1)
        # An unknown run letter finds -1, which counts as a single character.
        length = 1 if run is None else _RUN_LENGTH_CODES.find(run[1]) + 2
        text = replaced[position : position + length]
        position += length
        return text

    return _PROOFPOINT_V3_MARK.sub(restore, match.group("url"))
