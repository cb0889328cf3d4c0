"""Writing a personal email as MIME bytes, quickly and by the RFCs.

The standard library's ``email`` package builds the same messages but spends most of
a bulk send's time doing it; this module writes the few shapes we send directly:
``text/plain``, ``text/html`` or both as ``multipart/alternative`` (RFC 2046 5.1.4),
UTF-8 bodies in quoted-printable (RFC 2045 6.7, lines of at most 76 characters) and
headers encoded by RFC 2047 when they are not ASCII. Lines end in CRLF (RFC 5322 2.1).
"""

from __future__ import annotations

import binascii
import secrets
from email.header import Header
from email.utils import formataddr, parseaddr


def clean_header_value(value: str) -> str:
    """``value`` on one line: CR, LF and other controls become spaces."""
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def encode_text_header(name: str, value: str) -> str:
    """A header line for a free text value (Subject): ASCII as is, else RFC 2047."""
    value = clean_header_value(value)
    if value.isascii() and len(name) + len(value) < 76:
        return f"{name}: {value}"
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}"


def encode_address(display_name: str, address: str) -> str:
    """``Name <address>``, the name RFC 2047-encoded when it is not ASCII."""
    return formataddr((clean_header_value(display_name), address), charset="utf-8")


def normalise_from(value: str) -> tuple[str, str]:
    """The display name and address of a From setting like ``Shop <news@shop.test>``."""
    name, address = parseaddr(value)
    if "@" not in address:
        raise ValueError(f"{value!r} is not an email address")
    return name, address


def quoted_printable(text: str) -> bytes:
    """``text`` as UTF-8 quoted-printable with CRLF line ends."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\n", b"\r\n")


def build_message(headers: list[tuple[str, str]], text: str, html: str) -> bytes:
    """The whole message: ``headers`` and the body parts.

    A header is ``(name, value)`` with an ASCII value, or ``("", line)`` for a line
    that is already complete (e.g. from :func:`encode_text_header`).
    """
    head = "".join(
        f"{name}: {value}\r\n" if name else f"{value}\r\n" for name, value in headers
    )
    head += "MIME-Version: 1.0\r\n"

    if text and html:
        boundary = f"=_pb_{secrets.token_hex(12)}"
        return b"".join(
            (
                head.encode("ascii"),
                _multipart_header(boundary),
                f"--{boundary}\r\n".encode("ascii"),
                _part("text/plain", text),
                f"\r\n--{boundary}\r\n".encode("ascii"),
                _part("text/html", html),
                f"\r\n--{boundary}--\r\n".encode("ascii"),
            )
        )
    kind, body = ("text/html", html) if html else ("text/plain", text)
    return head.encode("ascii") + _part(kind, body)


def _part(content_type: str, body: str) -> bytes:
    return (
        f"Content-Type: {content_type}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii") + quoted_printable(body)


def _multipart_header(boundary: str) -> bytes:
    line = f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
    return line.encode("ascii")
