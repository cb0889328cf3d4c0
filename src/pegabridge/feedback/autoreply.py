"""Automatic replies (RFC 3834): out-of-office and vacation messages, not bounces."""

from __future__ import annotations

import re
from email.message import Message

from pegabridge.feedback import mime

_AUTO_HEADERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-auto-response-suppress-ignored",
    "x-mail-autoreply",
    "x-vacation",
)
_AUTO_SUBJECT = re.compile(
    r"out of (?:the )?office|\bout of office\b|vacation|auto(?:matic)?[- ]?(?:reply"
    r"|response|antwort|r[ée]ponse)|\bautoreply\b|\baway\b|abwesen|absence|on leave"
    r"|r[ée]ponse automatique|respuesta autom[aá]tica|risposta automatica"
    r"|\bOOO\b|holiday",
    re.IGNORECASE,
)


def is_auto_reply(msg: Message) -> bool:
    """Whether ``msg`` announces itself as an automatic reply (RFC 3834 and habits)."""
    submitted = mime.header(msg, "auto-submitted").lower()
    if submitted.startswith("auto-replied"):
        return True
    if any(mime.header(msg, name) for name in _AUTO_HEADERS):
        return True
    precedence = mime.header(msg, "precedence").lower()
    if precedence == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(mime.header(msg, "subject")))
