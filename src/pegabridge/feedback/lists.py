"""Refusals written by mailing-list managers (fml, Mailman, ezmlm and the like).

A list that will not pass a message on (its sender is not a member, or the message
has already gone round once) sends back a notice of its own, with no DSN and often no
bounce wording a mail server would use. Such a notice is a bounce of the list's
address: the mail reached nobody behind it. A notice that a post is *held* for a
moderator is not one: the moderator may still let it through.
"""

from __future__ import annotations

import re
from email.message import Message

from pegabridge.feedback import mime

_LIST_HEADERS = (
    "x-mlserver",
    "x-mailman-version",
    "x-ml-name",
    "mailing-list",
    "list-id",
    "list-post",
)
_REFUSAL = re.compile(
    r"\bnot (?:a )?member|not allowed to post|automatically rejected"
    r"|loop alert|duplicated message-id",
    re.IGNORECASE,
)
_HOLD = re.compile(r"\bheld\b|moderator", re.IGNORECASE)
_WORDS_MAX = 3000


def is_list_refusal(msg: Message, subject: str, text: str) -> bool:
    """Whether ``msg`` is a mailing-list manager refusing to pass a message on.

    It must come from a list manager (one of its headers) and say why it refuses;
    ``text`` is the notice without the copy of the message.
    """
    if not any(mime.header(msg, name) for name in _LIST_HEADERS):
        return False

    words = f"{subject}\n{text[:_WORDS_MAX]}"
    return bool(_REFUSAL.search(words)) and not _HOLD.search(words)
