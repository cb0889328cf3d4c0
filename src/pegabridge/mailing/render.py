"""Rendering one personal email, ready for tracking.

For a customer who consents to tracking, template links become click redirects
(``/t/c/{token}``), ``short_link(...)`` becomes a short-link redirect (``/t/s/``), and
an open pixel (``/t/o/``) closes the HTML body. Without consent the links stay as
written and there is no pixel. Every email has the unsubscribe page (``/t/u/``) in
``List-Unsubscribe`` with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
(RFC 8058), a VERP return path ``bounce+<token>@<domain>`` and the same token in
``X-Pegabridge-Broadcast``, so a bounce names its broadcast.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from pegabridge.events.models import ManualValue
from pegabridge.mailing.contents import CompiledCache, Content
from pegabridge.mailing.customers import Customer
from pegabridge.mailing.links import (
    LinkRegistry,
    LinkSpec,
    html_link_specs,
    rewrite_html,
    rewrite_text,
    text_link_specs,
)
from pegabridge.mailing.mime import (
    build_message,
    encode_address,
    encode_text_header,
    normalise_from,
)
from pegabridge.mailing.settings import MailSettings
from pegabridge.mailing.templates import template_context
from pegabridge.tracking.tokens import KeyRing, TokenKind, TokenPayload
from pegabridge.tracking.urls import TrackingUrls

BROADCAST_HEADER = "X-Pegabridge-Broadcast"
VERP_PREFIX = "bounce+"

_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_MARKER = re.compile("\x00pb(\\d+)\x00")


@dataclass(frozen=True)
class Envelope:
    """Who sends (the VERP return path) and who receives one email."""

    sender: str
    recipient: str


@dataclass(frozen=True)
class RenderedEmail:
    """One personal email: its subject as sent, bytes and envelope."""

    subject: str
    message: bytes
    message_id: str
    envelope: Envelope


@dataclass(frozen=True)
class Personal:
    """What makes one email personal."""

    portal_id: int
    broadcast_id: int
    customer: Customer
    recipient: str
    variables: dict[str, ManualValue]
    brand_name: str
    message_id: str


def merged_variables(
    content: Content, given: dict[str, ManualValue]
) -> dict[str, ManualValue]:
    """The manual options of a send: the content's defaults, then the given values."""
    merged = dict(content.variables)
    merged.update(given)
    return merged


def return_domain(settings: MailSettings) -> str:
    """The domain of VERP return paths and Message-IDs."""
    if settings.return_path_domain:
        return settings.return_path_domain.strip().lower()
    return normalise_from(settings.mail_from)[1].rpartition("@")[2].lower()


def broadcast_token(ring: KeyRing, portal_id: int, broadcast_id: int) -> str:
    """The token naming a broadcast in its return path and broadcast header."""
    return ring.sign(TokenPayload(TokenKind.BOUNCE, portal_id, broadcast_id))


class Renderer:
    """Renders personal emails of any content; shares compiled templates and links."""

    def __init__(
        self,
        settings: MailSettings,
        urls: TrackingUrls,
        registry: LinkRegistry,
        compiled: CompiledCache | None = None,
    ) -> None:
        self._settings = settings
        self._urls = urls
        self._registry = registry
        self._compiled = compiled or CompiledCache()
        self._domain = return_domain(settings)
        self._tracking_base = urls.base_url.rstrip("/") + "/t/"

    async def render(self, content: Content, personal: Personal) -> RenderedEmail:
        """The email of ``content`` for one customer; makes link rows on first use."""
        track = personal.customer.tracking_consent
        shorts: list[LinkSpec] = []
        unsubscribe = self._urls.unsubscribe_url(
            personal.portal_id, personal.broadcast_id
        )
        token = broadcast_token(
            self._urls.ring, personal.portal_id, personal.broadcast_id
        )
        context = self._context(personal, track, shorts, unsubscribe)
        subject, html, text = self._compiled.get(content).render(context)

        if shorts:
            await self._registry.ensure(personal.portal_id, content.id, shorts)
            html, text = self._fill_short_links(content, personal, shorts, html, text)
        if track:
            specs = html_link_specs(html, self._tracking_base)
            specs += text_link_specs(text, self._tracking_base)
            await self._registry.ensure(personal.portal_id, content.id, specs)

        html, text = self._track(content, personal, track, html, text)
        message = self._message(
            content, personal, subject, html, text, unsubscribe, token
        )
        return RenderedEmail(
            subject,
            message,
            personal.message_id,
            Envelope(f"{VERP_PREFIX}{token}@{self._domain}", personal.recipient),
        )

    def return_path(self, personal: Personal) -> str:
        """The VERP envelope sender of a personal email."""
        token = broadcast_token(
            self._urls.ring, personal.portal_id, personal.broadcast_id
        )
        return f"{VERP_PREFIX}{token}@{self._domain}"

    def _context(
        self,
        personal: Personal,
        track: bool,
        shorts: list[LinkSpec],
        unsubscribe: str,
    ) -> dict[str, Any]:
        def short_link(url: Any, alt: Any = "", **_: Any) -> str:
            if not track:
                return str(url)
            shorts.append(LinkSpec("short", str(url), str(alt)))
            return f"\x00pb{len(shorts) - 1}\x00"

        return template_context(
            personal.customer.for_template(),
            personal.variables,
            unsubscribe_url=unsubscribe,
            brand_name=personal.brand_name,
            short_link=short_link,
        )

    def _fill_short_links(
        self,
        content: Content,
        personal: Personal,
        shorts: list[LinkSpec],
        html: str,
        text: str,
    ) -> tuple[str, str]:
        def url(match: re.Match[str]) -> str:
            spec = shorts[int(match.group(1))]
            link_id = self._registry.id_of(content.id, spec)
            return self._urls.short_link_url(
                personal.portal_id, personal.broadcast_id, link_id
            )

        return _MARKER.sub(url, html), _MARKER.sub(url, text)

    def _track(
        self, content: Content, personal: Personal, track: bool, html: str, text: str
    ) -> tuple[str, str]:
        if not track:
            return rewrite_html(html, self._tracking_base, str, track=False), text

        def url_for(spec: LinkSpec) -> str:
            link_id = self._registry.id_of(content.id, spec)
            return self._urls.click_url(
                personal.portal_id, personal.broadcast_id, link_id
            )

        html = rewrite_html(html, self._tracking_base, url_for)
        text = rewrite_text(text, self._tracking_base, url_for)
        if html:
            html = _add_pixel(
                html, self._urls.open_url(personal.portal_id, personal.broadcast_id)
            )
        return html, text

    def _message(
        self,
        content: Content,
        personal: Personal,
        subject: str,
        html: str,
        text: str,
        unsubscribe: str,
        token: str,
    ) -> bytes:
        from_name, from_address = normalise_from(
            content.from_address or self._settings.mail_from
        )
        customer = personal.customer
        full_name = f"{customer.first_name} {customer.last_name}".strip()
        headers = [
            ("From", encode_address(from_name, from_address)),
            ("To", encode_address(full_name, personal.recipient)),
            ("", encode_text_header("Subject", subject)),
            ("Date", _date()),
            ("Message-ID", personal.message_id),
            ("List-Unsubscribe", f"<{unsubscribe}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            (BROADCAST_HEADER, token),
        ]
        return build_message(headers, text, html)


def _date() -> str:
    return formatdate(usegmt=True)


def _add_pixel(html: str, url: str) -> str:
    pixel = (
        f'<img src="{html_lib.escape(url)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px" />'
    )
    matches = list(_BODY_END.finditer(html))
    if not matches:
        return html + pixel
    end = matches[-1].start()
    return html[:end] + pixel + html[end:]
