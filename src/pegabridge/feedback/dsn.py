"""RFC 3464 delivery status notifications: the per-recipient field groups.

The groups are read from ``message/delivery-status`` parts, and also from plain text
that carries the same fields (some servers write them into a ``text/plain`` part).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pegabridge.feedback import codes, mime

_TYPE_PREFIX = re.compile(r"^\s*[\w.-]+\s*;\s*")


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One per-recipient group of a DSN, values as written (type prefixes removed)."""

    address: str
    action: str
    status: str
    diagnostic: str
    diagnostic_type: str = ""


def recipients_from_text(text: str) -> list[DsnRecipient]:
    """Every per-recipient group found in ``text``, in order."""
    found = []
    for block in mime.field_blocks(text):
        fields = dict(reversed(block))  # first occurrence wins
        recipient = _recipient_of(fields)
        if recipient is not None:
            found.append(recipient)
    return found


def _recipient_of(fields: dict[str, str]) -> DsnRecipient | None:
    final = fields.get("final-recipient", "")
    original = fields.get("original-recipient", "")
    if not final and not original:
        return None
    if "action" not in fields and "status" not in fields:
        return None

    address = mime.first_address(_strip_type(final)) or mime.first_address(
        _strip_type(original)
    )
    if not address:
        address = mime.first_address(fields.get("x-actual-recipient", ""))
    if not address:
        return None

    return DsnRecipient(
        address=address,
        action=fields.get("action", "").strip().lower().split(" ")[0],
        status=codes.normalize_enhanced(fields.get("status", "")),
        diagnostic=_strip_type(fields.get("diagnostic-code", "")),
        diagnostic_type=_type_of(fields.get("diagnostic-code", "")),
    )


def _type_of(value: str) -> str:
    """``"X-Unix; 77"`` -> ``"x-unix"``; ``""`` when the value names no type."""
    match = _TYPE_PREFIX.match(value)
    return match.group(0).strip(" \t\r\n;").lower() if match else ""


def _strip_type(value: str) -> str:
    """``"rfc822; a@b"`` -> ``"a@b"``, ``"smtp; 550 ..."`` -> ``"550 ..."``."""
    return _TYPE_PREFIX.sub("", value, count=1).strip()
