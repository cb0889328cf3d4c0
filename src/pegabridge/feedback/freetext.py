"""Plain-text bounces: finding failed recipients and their diagnostic in free text.

Mail servers describe failures in their own words (Postfix ``<a@b>: host ... said``,
Exim's indented address list, qmail's ``<a@b>:`` paragraphs, Exchange's "could not be
reached" lists, Gmail's "failed permanently", ...). Rather than one parser per server,
this module reads them all the same way: every address in the report part of the text
(before the copy of the original message) is a candidate, minus the addresses that are
known to be someone else (the sender, the bounce's own addressee, postmasters); the text
from one recipient to the next is that recipient's diagnostic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pegabridge.feedback import mime
from pegabridge.feedback.original import ORIGINAL_MARKER

_ROLE_LOCAL_PARTS = frozenset(
    {
        "postmaster",
        "mailer-daemon",
        "mailer_daemon",
        "mailerdaemon",
        "daemon",
        "abuse",
        "root",
        "noreply",
        "no-reply",
        "bounce",
        "bounces",
        "nobody",
        "hostmaster",
        "webmaster",
        "help",
        "support",
    }
)
# An address on such a line names the sender, a server or a message, not a recipient.
_NOISE_LINE = re.compile(
    r"^\s*(?:>+\s*)?(?:from|received|return-path|message-id|sender|reply-to|errors-to"
    r"|in-reply-to|references|x-[\w-]+|date|subject|reporting-mta|received-from-mta"
    r"|remote-mta|dkim-signature|authentication-results|envelope-from|resent-[\w-]+"
    r"|list-[\w-]+|content-[\w-]+|arrival-date|original-envelope-id|return-receipt-to"
    r"|\S+ id \S+)\s*:",
    re.IGNORECASE,
)
_NOISE_BEFORE = re.compile(
    r"(?:mail from:?\s*<?|envelope-from\s*<?|sender\s*<?|from:?\s*<|message-id:?\s*<?"
    r"|smtp\.mailfrom=|header\.(?:from|i)=@?|return-path:?\s*<?|reply to\s*<?"
    r"|contact\s+<?|mailto:|//)$",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|fail|notification|problem|report|error)"
    r"|returned mail|returned to sender|failure notice|could not be delivered"
    r"|mail delivery|delivery has failed|non.?remis|nicht zustellbar|unzustellbar"
    r"|not delivered|failed delivery|rejected|bounce|permanent (?:error|failure)"
    r"|mail system error|error sending|message not delivered|cannot deliver"
    r"|unable to deliver|warning: could not send|delayed mail|delivery delayed"
    r"|nondeliverable|delivery failure|mail failure|error\b",
    re.IGNORECASE,
)
_DAEMON_FROM = re.compile(
    r"mailer[-_]?daemon|postmaster|mail delivery (?:subsystem|system)|mmdf|daemon@"
    r"|mail administrator|system administrator|mail ?router|mdaemon|mailer@",
    re.IGNORECASE,
)
_BOUNCE_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable"
    r"|delivery (?:has )?failed"
    r"|permanent(?:ly)? (?:error|failure|fatal|failed)|delivery to the following"
    r"|following (?:address|recipient)|user unknown|unknown user|no such user"
    r"|mailbox (?:is )?(?:full|unavailable)|returned mail|unable to deliver"
    r"|was not delivered|failed to deliver|delivery failure|not be delivered"
    r"|rejected|does not exist|undeliverable|error (?:from|report|message)"
    r"|transcript of session|smtp error|host unknown|non-delivery|delivery problem",
    re.IGNORECASE,
)
_DELAY = re.compile(
    r"delayed mail|delivery delayed|delayed delivery|still being retried"
    r"|will (?:continue|keep) (?:to )?(?:try|retry|attempt)"
    r"|has not (?:yet )?been delivered"
    r"|not yet been delivered|could not send message for past|will be retried"
    r"|warning: message .{0,60} delayed|delivery (?:is )?delayed|temporarily deferred"
    r"|no action is required|will try again|still trying|delay warning"
    r"|has been delayed|this is a warning|warning message only",
    re.IGNORECASE,
)
_GAVE_UP = re.compile(
    r"giving up|gave up|permanent|fatal|could not be delivered|undeliverable"
    r"|failed(?! temporarily)|will not be delivered|has expired|too long|bounced",
    re.IGNORECASE,
)
# Exchange repeats the original's To/Subject/Sent before the failed recipients.
_EXCHANGE_SUMMARY = re.compile(
    r"your message\s+to:.{0,2000}?did not reach the following recipient",
    re.IGNORECASE | re.DOTALL,
)
_SEGMENT_MAX = 1200
_SPACES = re.compile(r"\s+")
_DIAGNOSTIC_MAX = 500


@dataclass(frozen=True, slots=True)
class TextRecipient:
    """A recipient found in free text with the text that describes its failure."""

    address: str
    segment: str


def report_part(text: str) -> str:
    """``text`` up to where the copy of the original message begins."""
    marker = ORIGINAL_MARKER.search(text)
    return text[: marker.start()] if marker else text


def is_bounce_like(subject: str, from_: str, body: str) -> bool:
    """Whether the sender, subject or words of a message say it is a bounce."""
    if _DAEMON_FROM.search(from_) or _BOUNCE_SUBJECT.search(subject):
        return True
    return bool(_BOUNCE_BODY.search(_folded(body[:4000])))


def _folded(text: str) -> str:
    """Whitespace runs (line breaks included) as single spaces, for phrase search."""
    return _SPACES.sub(" ", text)


def is_delay(subject: str, body: str) -> bool:
    """Whether a report only warns of a delay (delivery will be retried)."""
    head = _folded(body[:3000])
    if not (_DELAY.search(subject) or _DELAY.search(head)):
        return False
    return not _GAVE_UP.search(subject) and not _GAVE_UP.search(_without_delay(head))


def _without_delay(text: str) -> str:
    return _DELAY.sub(" ", text)


def find_recipients(text: str, excluded: set[str]) -> list[TextRecipient]:
    """Failed recipients named in ``text``, each with its part of the text.

    ``excluded`` holds lower-cased addresses that are known not to be recipients.
    """
    text = _EXCHANGE_SUMMARY.sub(" ", text)
    positions: list[tuple[int, str]] = []
    seen: set[str] = set()
    for match in mime.address_matches(text):
        address = mime.clean_address(match.group(0))
        key = address.lower()
        if key in seen or _is_excluded(key, excluded):
            continue
        if _is_noise(text, match.start()):
            continue
        seen.add(key)
        positions.append((match.start(), address))

    found = []
    for index, (start, address) in enumerate(positions):
        end = positions[index + 1][0] if index + 1 < len(positions) else len(text)
        end = min(end, start + _SEGMENT_MAX)
        found.append(TextRecipient(address=address, segment=text[start:end]))
    return found


def segment_for(text: str, address: str) -> str:
    """The text that follows the first mention of ``address`` (for DSN enrichment)."""
    index = text.lower().find(address.lower())
    if index < 0:
        return ""
    return text[index : index + _SEGMENT_MAX]


# Sendmail's "554 <a@b.example>... Remote protocol error: ..." tells the reason for
# that address on its own line; the lines after it are about other addresses.
_SENDMAIL_LINE = re.compile(r">?\.\.\.\s+\S.{8,}")


def diagnostic_of(segment: str, address: str) -> str:
    """The server's words from a segment: whitespace folded, truncated."""
    body = segment[len(address) :] if segment.startswith(address) else segment
    own_line = body.split("\n", 1)[0]
    if _SENDMAIL_LINE.match(own_line):
        body = own_line
    body = re.sub(r"\s+", " ", body).strip(" :>-\t\n")
    return body[:_DIAGNOSTIC_MAX]


def _is_excluded(address: str, excluded: set[str]) -> bool:
    if address in excluded:
        return True
    local = address.split("@", 1)[0]
    return local in _ROLE_LOCAL_PARTS


def _is_noise(text: str, start: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    line = text[line_start:start]
    if _NOISE_LINE.match(line):
        return True
    before = text[max(line_start, start - 24) : start]
    if _NOISE_BEFORE.search(before):
        return True
    return _is_message_id(text, start)


def _is_message_id(text: str, start: int) -> bool:
    """A ``<...@...>`` token whose local part looks generated (a Message-ID)."""
    if start == 0 or text[start - 1] != "<":
        return False
    end = text.find("@", start)
    local = text[start:end] if end > 0 else ""
    digits = sum(ch.isdigit() for ch in local)
    return len(local) > 20 and digits > len(local) // 3
