"""Helpers of the mailing tests: an SMTP sink on loopback and a seeded brand."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from brand_support import install_brand_for


@dataclass
class Received:
    """One message the sink took."""

    sender: str
    recipients: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        message = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class SinkHandler:
    """Keeps every message; refuses recipients listed in ``refuse``."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        self.received.append(
            Received(str(envelope.mail_from), list(envelope.rcpt_tos), data)
        )
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """aiosmtpd on a loopback port, in its own thread."""

    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.port = free_port()
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.handler.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(self.handler.received)} of {count} arrived")
            await asyncio.sleep(0.02)
        return self.handler.received


PORTAL_ID = 41
BRAND_ID = 3


async def install_brand(runtime: Any, sandbox: Any) -> None:
    """Portal, brand and an installation sending every activity to ``sandbox``."""
    await install_brand_for(
        runtime, (PORTAL_ID, "Mailing portal"), (BRAND_ID, "Mailing brand"), sandbox
    )


OFFER_HTML = """<html><head>
<meta name="InteractionId" content="{{ InteractionId }}">
</head><body>
<p>Hello {{ customer.first_name }}, offer {{ UniqueOfferId }}.</p>
<a href="https://shop.example/offer?id={{ UniqueOfferId }}&amp;utm_source=pega"
   data-pb-tags="offer,spring" title="See the offer">See it</a>
<a href="{{ short_link('https://shop.example/s', alt='short') }}">Short</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a>
</body></html>
"""
OFFER_TEXT = "Hello {{ customer.first_name }}: https://shop.example/offer\n"
