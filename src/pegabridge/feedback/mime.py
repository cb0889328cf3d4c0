"""Reading MIME structure without ever raising, whatever the input looks like.

Returned mail is often broken (bad boundaries, wrong charsets, headers folded by hand),
so everything here uses the lenient ``compat32`` policy and decodes with replacement
characters instead of failing.
"""

from __future__ import annotations

import contextlib
import email
import email.header
import re
from collections.abc import Iterator
from email.message import Message
from email.policy import compat32

_HEADER_LINE = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*)$")
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}"
    r"|[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@\[[0-9.]+\]"
)
# Exchange writes "smtp=user@host" and "SMTP:user@host"; mailto: links too.
_ADDRESS_PREFIX = re.compile(r"^(?:smtp|rfc822|mailto|x400)[=:]", re.IGNORECASE)
_MAX_PARTS = 200


def load(raw: bytes) -> Message:
    """Parse ``raw`` leniently; a message that cannot be parsed becomes plain text."""
    try:
        return email.message_from_bytes(raw, policy=compat32)
    except Exception:  # the parser is lenient, but stay safe on any input
        fallback = Message()
        fallback.set_payload(raw.decode("utf-8", "replace"))
        return fallback


def header(msg: Message, name: str) -> str:
    """One header decoded to text (RFC 2047 words decoded), ``""`` when absent."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    return decode_header_value(value)


def header_all(msg: Message, name: str) -> list[str]:
    """Every occurrence of a header, decoded."""
    try:
        values = msg.get_all(name) or []
    except Exception:
        return []
    return [decode_header_value(value) for value in values]


def decode_header_value(value: object) -> str:
    """A header value as text; encoded words are decoded when possible."""
    text = str(value)
    if "=?" not in text:
        return _unfold(text)
    try:
        pieces = email.header.decode_header(text)
        decoded = "".join(
            piece.decode(charset or "ascii", "replace")
            if isinstance(piece, bytes)
            else piece
            for piece, charset in pieces
        )
    except Exception:
        return _unfold(text)
    return _unfold(decoded)


def _unfold(text: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", text).strip()


def walk(msg: Message) -> Iterator[Message]:
    """Every part of ``msg``, depth first, bounded so a hostile message cannot loop."""
    count = 0
    stack = [msg]
    while stack and count < _MAX_PARTS:
        part = stack.pop()
        count += 1
        yield part
        payload = part.get_payload()
        if isinstance(payload, list):
            children = [child for child in payload if isinstance(child, Message)]
            stack.extend(reversed(children))


def content_type(part: Message) -> str:
    """The lower-cased ``maintype/subtype`` of a part, ``text/plain`` by default."""
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def part_text(part: Message) -> str:
    """The decoded text of a non-multipart part (transfer encoding and charset)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(_message_text(child) for child in payload)

    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        return str(payload or "")

    charset = "utf-8"
    with contextlib.suppress(Exception):
        charset = part.get_content_charset() or "utf-8"
    return _decode_bytes(data, charset)


def _decode_bytes(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _message_text(msg: object) -> str:
    """A sub-message (compat32 parses message/* parts so) as ``Name: value`` text."""
    if not isinstance(msg, Message):
        return str(msg)
    lines = [f"{name}: {decode_header_value(value)}" for name, value in msg.items()]
    body = msg.get_payload()
    if isinstance(body, str) and body.strip():
        lines.append("")
        lines.append(body)
    return "\n".join(lines)


def field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """``Name: value`` blocks of ``text`` split on blank lines (RFC 3464 groups).

    Continuation lines are joined to the field above; lines that are not fields are
    skipped, so this is safe to run on any text.
    """
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        if line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
            continue
        match = _HEADER_LINE.match(line)
        if match:
            current.append((match.group(1).lower(), match.group(2).strip()))
    if current:
        blocks.append(current)
    return blocks


def clean_address(found: str) -> str:
    """An address as matched in text, without quotes and an ``smtp=`` style prefix."""
    address = _ADDRESS_PREFIX.sub("", found.strip(".'`"))
    return address.strip(".'`")


def addresses_in(text: str) -> list[str]:
    """Every e-mail address in ``text``, in order, as written."""
    return [clean_address(match.group(0)) for match in _ADDRESS.finditer(text)]


def address_matches(text: str) -> Iterator[re.Match[str]]:
    """Positions of e-mail addresses in ``text``."""
    return _ADDRESS.finditer(text)


def first_address(value: str) -> str:
    """The first e-mail address in a header or field value, ``""`` when none."""
    match = _ADDRESS.search(value)
    return clean_address(match.group(0)) if match else ""
