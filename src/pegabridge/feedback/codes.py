"""Finding status codes in text: RFC 3463 enhanced codes and SMTP reply codes.

Codes are searched with care not to read an IP address (``192.0.2.1``), a software
version (``8.12.11``) or a date as a status code.
"""

from __future__ import annotations

import re

# RFC 3463 section 2: class.subject.detail, class 2, 4 or 5, each part up to 3 digits.
# The look-arounds keep "5.1.1.1" (an address) and "x5.1.1" from matching.
_ENHANCED = re.compile(r"(?<![\w./-])([245])\.(\d{1,3})\.(\d{1,3})(?![\w.]*\d)(?!-\d)")
_REPLY = re.compile(r"(?<![\w.#/:=+-])([245][0-5]\d)(?=[ \-]|$)(?![- ]?\d{2,}[\d:.])")
_PSEUDO = re.compile(r"^[245]\.0\.9\d\d$")


def is_pseudo_code(code: str) -> bool:
    """True for Sisimai's invented ``x.0.9yy`` codes, which no mail server writes."""
    return bool(_PSEUDO.match(code))


def normalize_enhanced(value: str) -> str:
    """The first usable enhanced status code in ``value`` ("5.1.1"), or ``""``."""
    for match in _ENHANCED.finditer(value):
        code = ".".join(str(int(part)) for part in match.groups())
        if not is_pseudo_code(code):
            return code
    return ""


def find_enhanced_codes(text: str) -> list[str]:
    """Every usable enhanced status code in ``text``, in order of appearance."""
    codes = []
    for match in _ENHANCED.finditer(text):
        code = ".".join(str(int(part)) for part in match.groups())
        if not is_pseudo_code(code):
            codes.append(code)
    return codes


def find_reply_code(text: str) -> str:
    """The first SMTP reply code (``"550"``) in ``text``, or ``""``."""
    match = _REPLY.search(text)
    return match.group(1) if match else ""


def most_specific(codes: list[str]) -> str:
    """The most telling code of ``codes``: a non-generic one beats ``x.0.0``."""
    if not codes:
        return ""
    for code in codes:
        if not code.endswith(".0.0") and code[0] in "45":
            return code
    return codes[0]
