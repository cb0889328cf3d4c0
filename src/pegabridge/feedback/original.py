"""The returned original message and the addresses the feedback itself was sent to.

Both feed the later matching step: a VERP return path shows in the feedback's own
``To``/``Delivered-To``/``X-Original-To``; failing that, the returned original's
``Message-ID`` and ``X-Pegabridge-*`` headers identify the broadcast.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses

from pegabridge.feedback import mime
from pegabridge.feedback.models import OriginalHeaders

_RETURN_PATH_HEADERS = (
    "to",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "x-envelope-to",
)
_RECEIVED_FOR = re.compile(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+)>?", re.IGNORECASE)

# Lines that start the copy of the original message inside a plain-text bounce.
ORIGINAL_MARKER = re.compile(
    r"^[ \t>]*(?:-{2,}|={2,}|\*{2,}|_{2,})?[ \t]*(?:"
    r"original message|original mail|returned message|unsent message"
    r"|undelivered message"
    r"|(?:this is )?a?\s*copy of (?:the |your )?(?:original )?message"
    r"|below this line is a copy|the header of the original message|original header"
    r"|message headers? follows?|start of (?:the )?returned message|returned mail"
    r"|the original message (?:is |was )?(?:attached|included|below|follows|headers)"
    r"|original message follows"
    r"|headers? of (?:the )?(?:original|returned|your) message|the message follows"
    r"|this is the (?:original|returned) message|begin (?:the )?(?:original|returned)"
    r"|message text follows|undeliverable message"
    r"|\s*text of (?:the )?(?:original|returned)"
    r"|the first \d+ lines"
    r")|^content-type:\s*message/rfc822|^content-type:\s*text/rfc822-headers",
    re.IGNORECASE | re.MULTILINE,
)
_INLINE_HEADERS_START = re.compile(
    r"^(?:Return-Path|Received|Message-I[Dd]|From|To|Subject|Date|MIME-Version):", re.M
)


def return_path_addresses(msg: Message) -> tuple[str, ...]:
    """Addresses the feedback message was delivered to, first seen first."""
    found: list[str] = []
    for name in _RETURN_PATH_HEADERS:
        for value in mime.header_all(msg, name):
            found.extend(mime.addresses_in(value))
            found.extend(_header_addresses(value))

    received = mime.header_all(msg, "received")
    if received:
        match = _RECEIVED_FOR.search(received[0])
        if match:
            found.append(match.group(1))

    return tuple(_unique(found))


def _header_addresses(value: str) -> list[str]:
    # The address scan wants a dotted domain, but a trial's return path is
    # bounce+<token>@localhost.
    return [address for _name, address in getaddresses([value]) if "@" in address]


def _unique(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    result = []
    for address in addresses:
        key = address.lower()
        if key not in seen:
            seen.add(key)
            result.append(address)
    return result


def find_original(msg: Message, report_text: str) -> Message | None:
    """The returned original message (or its headers), wherever the bounce put it."""
    for part in mime.walk(msg):
        kind = mime.content_type(part)
        if kind == "message/rfc822":
            payload = part.get_payload()
            if (
                isinstance(payload, list)
                and payload
                and isinstance(payload[0], Message)
            ):
                return payload[0]
        if kind == "text/rfc822-headers":
            return parse_headers(mime.part_text(part))

    return _inline_original(report_text)


def _inline_original(text: str) -> Message | None:
    marker = ORIGINAL_MARKER.search(text)
    if marker is None:
        return None
    rest = text[marker.end() :]
    start = _INLINE_HEADERS_START.search(rest)
    if start is None or start.start() > 400:
        return None
    return parse_headers(rest[start.start() :])


def parse_headers(text: str) -> Message | None:
    """Headers in ``text`` as a message; a quoted copy's indentation removed."""
    lines = text.lstrip("\n").split("\n")
    if lines and lines[0][:1] in (" ", "\t"):
        lines = [line[1:] if line[:1] in (" ", "\t") else line for line in lines]
    try:
        return HeaderParser(policy=compat32).parsestr("\n".join(lines))
    except Exception:
        return None


def original_headers(original: Message | None) -> OriginalHeaders:
    """The matching headers of the returned original, empty when it was not returned."""
    if original is None:
        return OriginalHeaders()

    pegabridge = tuple(
        (name.lower(), mime.decode_header_value(value))
        for name, value in original.items()
        if name.lower().startswith("x-pegabridge-")
    )
    return OriginalHeaders(
        message_id=mime.header(original, "message-id"),
        to=mime.header(original, "to"),
        from_=mime.header(original, "from"),
        subject=mime.header(original, "subject"),
        pegabridge=pegabridge,
    )
