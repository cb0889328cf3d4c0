"""Deciding ``bounce_reason`` and ``bounce_type`` from a code and the server's words.

The whole decision is data: the table :data:`BANDS` (also flattened as :data:`RULES`)
and the corrections :data:`COMMAND_RULES`. Within the bands the first matching rule
wins; the bands are tried in this order:

1. enhanced status codes that name one cause (``5.1.1`` is always an unknown user);
2. the diagnostic text, for everything the codes leave open (``5.0.0``, ``5.7.1`` and
   ``550`` are used by servers for any kind of refusal); the most precise text (the
   diagnostic line) is tried before the text around it;
3. broad fallbacks on the enhanced code's class;
4. broad fallbacks on the reply code (``551`` has moved, ``550`` unknown user, ...).

Unless a band-1 code decided, the SMTP command that was refused corrects the reason: an
"unknown user" refused after ``DATA`` is a content filter (the recipient had been
accepted) unless the answer is a provider's mailbox lookup made at ``DATA``
(:data:`LOOKUPS_AFTER_DATA`), and a refusal of ``MAIL FROM`` or ``HELO`` is about the
sender.

``bounce_type`` follows from the reason alone: ``HARD`` only for reasons that say the
address itself is bad (:data:`HARD_REASONS`: user unknown, host unknown, has moved, not
accepting mail), ``SOFT`` for everything else, even with a permanent ``5.x.x`` code. An
unknown host or a host not accepting mail under a temporary ``4.x.x`` code is ``SOFT``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pegabridge.feedback.models import BounceReason, BounceType

R = BounceReason

Source = Literal["status", "reply", "text"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: when ``pattern`` matches ``source``, it gives ``reason``.

    ``status`` patterns match the whole enhanced code ("5.1.1"), ``reply`` patterns the
    whole reply code ("550"), ``text`` patterns search the diagnostic text (lower case).
    """

    source: Source
    pattern: re.Pattern[str]
    reason: BounceReason


def _status(pattern: str, reason: BounceReason) -> Rule:
    return Rule("status", re.compile(pattern + r"\Z"), reason)


def _reply(pattern: str, reason: BounceReason) -> Rule:
    return Rule("reply", re.compile(pattern + r"\Z"), reason)


def _text(pattern: str, reason: BounceReason) -> Rule:
    return Rule("text", re.compile(pattern), reason)


HARD_REASONS = frozenset(
    {R.USER_UNKNOWN, R.HOST_UNKNOWN, R.HAS_MOVED, R.NOT_ACCEPTING_MAIL}
)

_SPECIFIC_CODES: tuple[Rule, ...] = (
    _status(r"[45]\.1\.[13]", R.USER_UNKNOWN),
    _status(r"[45]\.1\.2", R.HOST_UNKNOWN),
    _status(r"[45]\.1\.6", R.HAS_MOVED),
    _status(r"[45]\.1\.10", R.NOT_ACCEPTING_MAIL),  # RFC 7505 null MX
    _status(r"[45]\.1\.[78]", R.SENDER_BLOCKED),
    _status(r"[45]\.2\.2", R.MAILBOX_FULL),
    _status(r"[45]\.2\.3|[45]\.3\.4", R.MESSAGE_TOO_LARGE),
    _status(r"[45]\.3\.2", R.NOT_ACCEPTING_MAIL),
    _status(r"[45]\.4\.7", R.EXPIRED),
    _status(r"[45]\.4\.6", R.NETWORK_ERROR),  # routing loop
    _status(r"[45]\.7\.(?:5|7|8|2[3-7])", R.AUTHENTICATION_FAILED),
    _status(r"[45]\.7\.9", R.POLICY_RELATED),
)

# Text rules: more specific causes first, so "mailbox full" wins over "mailbox", and
# unknown users win over the word "rejected" that often surrounds them.
_TEXT: tuple[Rule, ...] = (
    _text(
        r"has moved|address (?:has )?changed|no longer (?:valid|in use) at this"
        r"|forwarding address|user has a new address",
        R.HAS_MOVED,
    ),
    _text(
        r"mailbox (?:is )?full|full mailbox|mailbox size limit|over ?quota|quota"
        r"|insufficient (?:disk |storage )?space|storage (?:space |limit)|disk full"
        r"|mailfolder is full|mailbox (?:has )?exceeded"
        r"|exceeds? (?:the )?(?:storage|mailbox)"
        r"|too many messages in|out of storage|maildir (?:size )?over",
        R.MAILBOX_FULL,
    ),
    _text(
        r"message (?:is )?too (?:large|big)|message size|size (?:limit )?exceed"
        r"|exceeds? (?:the )?(?:maximum |max )?(?:message )?size|message length"
        r"|mail size|too large",
        R.MESSAGE_TOO_LARGE,
    ),
    _text(
        r"(?:account|mailbox|user|address)(?: has been| is| was)? (?:disabled"
        r"|suspended|inactive|deactivated|locked|frozen|expired|closed|blocked)"
        r"|(?:disabled|suspended|inactive|deactivated|expired|closed) "
        r"(?:account|mailbox|user)"
        r"|account (?:is )?(?:not active|unavailable)"
        r"|(?:account|mailbox|address|recipient)\b[^\n]{0,40}\bon hold\b"
        r"|\bis (?:disabled|suspended)"
        r"|mailbox is not active|this account has been|temporarily disabled",
        R.MAILBOX_DISABLED,
    ),
    _text(
        r"name server reply|servfail|temporary (?:failure in name|dns)"
        r"|host not found, try again|dns (?:timeout|temporary)",
        R.NETWORK_ERROR,
    ),
    _text(
        r"host (?:or domain name )?not found|unknown host|host unknown|no such domain"
        r"|domain (?:name )?(?:not found|does not exist|doesn't exist|unknown)"
        r"|unknown domain|unrouteable (?:mail )?domain|name or service not known"
        r"|nxdomain|no mx |no mx$|mx record|dns (?:lookup|error|failure)"
        r"|unresolvable|could not be resolved|cannot be resolved|domain not valid"
        r"|illegal host|invalid domain|hostname (?:is )?unknown|bad destination host"
        r"|no route to domain|domain is not (?:valid|registered)"
        r"|domain is not reachable"
        r"|(?<![@\w.-])(?:[a-z0-9-]+\.)+[a-z]{2,} does not exist",
        R.HOST_UNKNOWN,
    ),
    _text(
        r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account"
        r"|person|local user)|(?:user|recipient|mailbox|address|account|addressee)"
        r" (?:not found|unknown|does not exist|doesn't exist|not exist|invalid"
        r"|is invalid|not valid|is not valid)"
        r"|(?:invalid|unknown|bad|illegal) (?:recipient|mailbox|address|user|alias"
        r"|local part|account|e-?mail address)"
        r"|does not exist|doesn't exist|not exist|no mailbox|not a valid (?:user"
        r"|mailbox|recipient)|unrouteable address|is not a known user"
        r"|not listed in (?:domino|the|our)|doesn't have an? .{0,40}account"
        r"|does not have an? .{0,40}account|no account|not our customer"
        r"|recipientnotfound|no such \S+ here|unknown (?:or illegal )?alias"
        r"|addressee unknown|undeliverable address|recipient rejected"
        r"|mailbox not found|user not found|not found in directory"
        r"|no longer (?:available|active|valid)|no valid recipients"
        r"|name (?:is )?not recogni[sz]ed|unknown local"
        r"|user (?:is )?not (?:here|local)|not a (?:known|valid) (?:user|recipient)"
        r"|user lookup failure|mailbox \S+ does not|doesn't handle mail for"
        r"|recipient address rejected: (?:user|undeliverable|access denied)"
        r"|mailbox unavailable|address not found"
        r"|address (?:couldn't|could not) be found"
        r"|invalid .{0,20}userid|check if (?:the )?address is correct"
        r"|not listed in public|recipient name is not recogni",
        R.USER_UNKNOWN,
    ),
    _text(
        r"does not accept (?:any )?mail|not accept(?:ing)? (?:any )?(?:e-?)?mail"
        r"|accepts no mail|null mx|no longer accepts? mail|no smtp service",
        R.NOT_ACCEPTING_MAIL,
    ),
    _text(
        r"spamhaus|spamcop|barracudacentral|blocked using|\bdnsbl\b|\brbl\b"
        r"|black ?listed|block ?listed",
        R.SENDER_BLOCKED,
    ),
    _text(r"virus|malware|infected|trojan", R.VIRUS_DETECTED),
    _text(
        r"spam|junk|unsolicited|bulk mail|content (?:looks|appears) like"
        r"|blocked (?:for|as|due to) .{0,20}(?:spam|abuse)",
        R.SPAM_DETECTED,
    ),
    _text(
        r"\bspf\b|dkim|dmarc|authenticat|starttls|\btls\b|not authorized to send"
        r"|unauthenticated",
        R.AUTHENTICATION_FAILED,
    ),
    _text(
        r"black ?list|block ?list|blocked|\brbl\b|\bdnsbl\b|spamhaus|spamcop"
        r"|reputation|reverse dns|\bptr\b|rdns|not permitted to relay|relay(?:ing)?"
        r" (?:denied|not permitted|prohibited|access denied)|relaying denied"
        r"|not allowed to relay|sender (?:address )?(?:rejected|denied|refused)"
        r"|access denied|listed (?:at|on|in)|banned|your ip|client host"
        r"|domain of sender|sender domain|sender verify|mail from",
        R.SENDER_BLOCKED,
    ),
    _text(
        r"expired|retry (?:timeout|time not reached)|gave up|giving up|could not be"
        r" delivered within|delivery time|time limit|timed? ?out .{0,30}(?:queue|retry)"
        r"|too long in queue|maximum time|has been delayed|delivery delayed",
        R.EXPIRED,
    ),
    _text(
        r"filter|content (?:rejected|not allowed)|rfc ?[25]?822|rfc ?5322"
        r"|header|attachment|message (?:was |has been )?rejected|not compliant"
        r"|refused by recipient|recipient.{0,20}(?:rejects|refuses)",
        R.CONTENT_REJECTED,
    ),
    _text(
        r"polic(?:y|ies)|prohibited|not allowed|violat|\bnot (?:a )?member\b",
        R.POLICY_RELATED,
    ),
    _text(
        r"too many (?:connections|sessions|messages|recipients)|rate limit|throttl"
        r"|connection rate|try (?:again )?later|sending rate",
        R.RATE_LIMITED,
    ),
    _text(
        r"connection (?:refused|timed out|reset|lost|closed|dropped)|timeout"
        r"|timed out|network|unreachable|no route to host|mail loop|too many hops"
        r"|loop detected|routing loop|loop alert|duplicated message-id"
        r"|lost connection|could not connect"
        r"|unable to connect|no answer|protocol error",
        R.NETWORK_ERROR,
    ),
    _text(
        r"system error|internal error|server error|local error|temporar"
        r"|resources|service (?:not available|unavailable)|configuration error"
        r"|mailer error|i/o error|syntax error|command not|permission denied"
        r"|system (?:is )?(?:full|busy)|queue file",
        R.SYSTEM_ERROR,
    ),
)

_FALLBACK_CODES: tuple[Rule, ...] = (
    _status(r"[45]\.1\.\d+", R.USER_UNKNOWN),
    _status(r"[45]\.2\.1", R.MAILBOX_DISABLED),
    _status(r"[45]\.2\.\d+", R.MAILBOX_FULL),
    _status(r"[45]\.3\.\d+", R.SYSTEM_ERROR),
    _status(r"[45]\.4\.4", R.HOST_UNKNOWN),
    _status(r"[45]\.4\.[12]", R.EXPIRED),
    _status(r"[45]\.4\.\d+", R.NETWORK_ERROR),
    _status(r"[45]\.5\.\d+", R.SYSTEM_ERROR),
    _status(r"[45]\.6\.\d+", R.CONTENT_REJECTED),
    _status(r"[45]\.7\.1", R.SENDER_BLOCKED),
    _status(r"[45]\.7\.\d+", R.POLICY_RELATED),
)

_FALLBACK_REPLIES: tuple[Rule, ...] = (
    _reply(r"551", R.HAS_MOVED),
    _reply(r"55[03]", R.USER_UNKNOWN),
    _reply(r"45[02]|552", R.MAILBOX_FULL),
    _reply(r"421|451|554|4\d\d", R.SYSTEM_ERROR),
)

BANDS: tuple[tuple[Rule, ...], ...] = (
    _SPECIFIC_CODES,
    _TEXT,
    _FALLBACK_CODES,
    _FALLBACK_REPLIES,
)
"""The classification table in its priority bands (see the module docstring)."""

RULES: tuple[Rule, ...] = tuple(rule for band in BANDS for rule in band)
"""The whole table, in priority order."""


_ANY_COMMAND = frozenset({"", "RCPT", "DATA", "MAIL", "HELO"})
_NOT_RCPT = _ANY_COMMAND - {"RCPT"}


@dataclass(frozen=True, slots=True)
class CommandRule:
    """A correction by the circumstances of the refusal.

    When the refused SMTP command is one of ``commands`` (``""``: the text does not
    say) and the enhanced code matches ``status`` (``None``: any code), a reason in
    ``reasons`` becomes ``becomes``.

    A refusal after ``DATA`` comes after the server accepted the recipient, so an
    "unknown user" there is a content filter speaking; a refusal of ``MAIL FROM`` or of
    the greeting is about the sender, never about the recipient's address. Unknown-user
    words under a code that names another cause (``x.2.x`` mailbox status, ``x.7.x``
    security or policy) are believed only when the server refused the recipient at
    ``RCPT``; elsewhere they are a filter's wording and the mail is ``content
    rejected``. With ``gateway`` set, the rule holds only for a notice written by a
    content-filtering gateway (:data:`FILTER_GATEWAYS`): such a gateway's "unknown
    user" without an ``x.1.x`` code is its filter's verdict, not a directory lookup.
    The rule does not hold when the server's words match one of ``unless``.
    """

    commands: frozenset[str]
    reasons: frozenset[BounceReason]
    becomes: BounceReason
    status: re.Pattern[str] | None = None
    gateway: bool = False
    unless: tuple[re.Pattern[str], ...] = ()


LOOKUPS_AFTER_DATA: tuple[re.Pattern[str], ...] = (
    re.compile(r"delivery error: dd\b", re.IGNORECASE),
)
"""Answers to ``DATA`` that are a mailbox lookup all the same. Yahoo checks the
recipient only once the message is in and answers "554 delivery error: dd" followed
by the mailbox's state ("This user doesn't have a yahoo.com account", "This account
has been disabled"): the directory's verdict, not a content filter's."""


COMMAND_RULES: tuple[CommandRule, ...] = (
    CommandRule(
        frozenset({"DATA"}),
        frozenset({R.USER_UNKNOWN}),
        R.CONTENT_REJECTED,
        unless=LOOKUPS_AFTER_DATA,
    ),
    CommandRule(frozenset({"MAIL"}), HARD_REASONS, R.SENDER_BLOCKED),
    CommandRule(frozenset({"HELO"}), HARD_REASONS, R.SENDER_BLOCKED),
    CommandRule(
        _NOT_RCPT,
        frozenset({R.USER_UNKNOWN}),
        R.CONTENT_REJECTED,
        status=re.compile(r"[45]\.[27]\.\d{1,3}\Z"),
    ),
    CommandRule(
        _NOT_RCPT, frozenset({R.USER_UNKNOWN}), R.CONTENT_REJECTED, gateway=True
    ),
)

FILTER_GATEWAYS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("x-nai-header", re.compile(r"mcafee", re.I)),
    ("x-mailer", re.compile(r"surfcontrol", re.I)),
    ("x-sef-processed", re.compile(r".")),
    ("x-mxl-notehash", re.compile(r".")),
    ("message-id", re.compile(r"<mxl~|@[\w.-]*\bmxlogic\.net>", re.I)),
    ("x-ahmailid", re.compile(r".")),
)
"""Headers by which a bounce shows it was written by a content-filtering gateway
(McAfee Email Gateway, SurfControl, MX Logic, ActiveHunter): header name (lower case)
and a pattern its value matches."""


def is_filter_gateway(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a bounce's own ``headers`` (name, value) name a filtering gateway."""
    for name, value in headers:
        key = name.lower()
        for gateway_header, pattern in FILTER_GATEWAYS:
            if key == gateway_header and pattern.search(str(value)):
                return True
    return False


_COMMAND_PHRASE = re.compile(
    r"(?:(?:in reply to|after|smtp command:?|command was|during|did not like our)\s+"
    r"|smtp:)(?:the\s+)?"
    r"(?:end of\s+)?(data|rcpt to|rcpt|mail from|mail|helo|ehlo)\b",
    re.IGNORECASE,
)
# Sendmail pipelines RCPT and DATA: its transcript shows ">>> DATA" before the refusal
# of the recipient, then the answer to DATA says no recipient was left ("503 ... Need
# RCPT" from Sendmail, "554 5.5.1 Error: no valid recipients" from Postfix, "503 valid
# RCPT command must precede DATA" from Exim) - the refusal was of the recipient.
_RCPT_REFUSED = re.compile(
    r"need rcpt|all rcpt commands were rejected|no valid recipients"
    r"|valid rcpt command must precede data",
    re.IGNORECASE,
)
_TRANSCRIPT_COMMAND = re.compile(
    r"^\s*>>>\s*(data|rcpt|mail|helo|ehlo)\b|^\s*<<<\s*[45]\d\d", re.I | re.M
)


def refused_command(text: str) -> str:
    """The SMTP command the server refused (``DATA``, ``RCPT``, ``MAIL``, ``HELO``).

    Read from Postfix/Exim phrases ("in reply to end of DATA command", "after RCPT
    TO") or from a Sendmail transcript (the last ``>>>`` line before the first
    ``<<< 5xx``). ``""`` when the text does not say.
    """
    if _RCPT_REFUSED.search(text):
        return "RCPT"

    last = ""
    for match in _TRANSCRIPT_COMMAND.finditer(text):
        if match.group(1) is None:
            if last:
                return last
            continue
        last = _command_name(match.group(1))

    phrase = _COMMAND_PHRASE.search(text)
    return _command_name(phrase.group(1)) if phrase else last


def _command_name(word: str) -> str:
    word = word.lower()
    if word.startswith("rcpt"):
        return "RCPT"
    if word.startswith("mail"):
        return "MAIL"
    if word in ("helo", "ehlo"):
        return "HELO"
    return "DATA"


def _first_match(
    rules: tuple[Rule, ...], values: dict[Source, str]
) -> BounceReason | None:
    for rule in rules:
        value = values[rule.source]
        if not value:
            continue
        if rule.source == "text":
            matched = rule.pattern.search(value)
        else:
            matched = rule.pattern.match(value)
        if matched:
            return rule.reason
    return None


def classify_reason(status: str, reply: str, *texts: str) -> BounceReason:
    """The first reason of :data:`BANDS` that matches, or ``other``.

    ``status`` is an enhanced code ("5.1.1" or ""), ``reply`` a reply code ("550" or
    ""), ``texts`` the server's words, most precise first (the diagnostic line, then
    the text around it): the text band tries each text in turn.
    """
    for band in BANDS:
        if band is _TEXT:
            for text in texts:
                values: dict[Source, str] = {
                    "status": "",
                    "reply": "",
                    "text": text.lower(),
                }
                reason = _first_match(band, values)
                if reason is not None:
                    return reason
            continue
        reason = _first_match(band, {"status": status, "reply": reply, "text": ""})
        if reason is not None:
            return reason

    return R.OTHER


def apply_command(
    reason: BounceReason,
    command: str,
    status: str = "",
    gateway: bool = False,
    texts: tuple[str, ...] = (),
) -> BounceReason:
    """``reason`` corrected by :data:`COMMAND_RULES` for the refused ``command``
    (``""`` when unknown), the enhanced code ``status``, whether a filtering
    ``gateway`` wrote the bounce and the server's words ``texts``."""
    for rule in COMMAND_RULES:
        if command not in rule.commands or reason not in rule.reasons:
            continue
        if rule.status is not None and not rule.status.match(status):
            continue
        if rule.gateway and not gateway:
            continue
        if any(p.search(text) for p in rule.unless for text in texts):
            continue
        return rule.becomes
    return reason


def bounce_type_for(
    reason: BounceReason, status: str = "", reply: str = ""
) -> BounceType:
    """``HARD`` when ``reason`` says the address is bad, else ``SOFT``.

    A host that is unknown or not accepting mail under a temporary code is ``SOFT``: a
    DNS answer or a refusal that the server itself calls temporary may change.
    """
    if reason not in HARD_REASONS:
        return BounceType.SOFT

    temporary = status.startswith("4") or (not status and reply.startswith("4"))
    if reason in (R.NOT_ACCEPTING_MAIL, R.HOST_UNKNOWN) and temporary:
        return BounceType.SOFT

    return BounceType.HARD


TEXT_OVERRIDES: dict[BounceReason, frozenset[BounceReason]] = {
    R.USER_UNKNOWN: frozenset({R.MAILBOX_FULL}),
    R.AUTHENTICATION_FAILED: frozenset({R.NOT_ACCEPTING_MAIL}),
}
"""Reasons of a specific code that the server's own words overrule: a server that
says the mailbox is over quota under ``5.1.1`` has picked the wrong code, and one that
says the host accepts no mail under ``5.7.27`` (sender null MX) speaks of the
destination, not of the sender's authentication. Only the
diagnostic line is read, not the text around it (it may speak of other recipients)."""


def _text_override(reason: BounceReason, texts: tuple[str, ...]) -> BounceReason:
    overrides = TEXT_OVERRIDES.get(reason)
    if not overrides:
        return reason
    # Only the diagnostic line (the first text) speaks for this recipient alone.
    diagnostic = texts[0].lower() if texts else ""
    said = _first_match(_TEXT, {"status": "", "reply": "", "text": diagnostic})
    return said if said in overrides and said is not None else reason


DIAGNOSTIC_TYPES: dict[str, BounceReason] = {
    "x-unix": R.SYSTEM_ERROR,
}
"""Diagnostic types (the word before ``;`` in a DSN ``Diagnostic-Code``, lower case)
that say who failed. ``X-Unix`` is a local delivery program (procmail, a pipe, the
mail spool) failing on the receiving host: the address was accepted and routed, so
a reason that calls the address bad becomes the reason given here."""


def classify(
    status: str,
    reply: str,
    *texts: str,
    gateway: bool = False,
    diagnostic_type: str = "",
) -> tuple[BounceReason, BounceType]:
    """Reason and type for one recipient, decided by :data:`BANDS`,
    :data:`COMMAND_RULES` and :data:`DIAGNOSTIC_TYPES` (the refused command is read
    from ``texts``; ``gateway`` says a content-filtering gateway wrote the bounce, see
    :func:`is_filter_gateway`; ``diagnostic_type`` is the DSN's diagnostic type).
    """
    reason = classify_reason(status, reply, *texts)
    if _first_match(_SPECIFIC_CODES, {"status": status, "reply": "", "text": ""}):
        reason = _text_override(reason, texts)
    else:
        command = next((c for c in map(refused_command, texts) if c), "")
        reason = apply_command(reason, command, status, gateway, texts)

    local_failure = DIAGNOSTIC_TYPES.get(diagnostic_type.lower())
    if local_failure is not None and reason in HARD_REASONS:
        reason = local_failure
    return reason, bounce_type_for(reason, status, reply)
