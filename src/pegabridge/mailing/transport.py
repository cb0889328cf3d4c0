"""Handing emails over: an SMTP relay (aiosmtplib) or, for trials, a folder of files.

The SMTP transport keeps a small pool of open connections (at most
``smtp_connections``), reuses each for many messages and speaks the envelope itself
(MAIL, RCPT, DATA) so that it knows which command a refusal answered:

- a refused ``RCPT`` or ``DATA`` is about this recipient or message: :class:`Refused`,
  which the sender records as a bounce right away;
- a refused ``MAIL``, a failed login or a lost connection is about the relay:
  :class:`TransportError`, and the email is not counted as sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from pegabridge.mailing.render import Envelope
from pegabridge.mailing.settings import MailSettings

log = logging.getLogger(__name__)

_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class Accepted:
    """The relay took the message."""

    response: str = ""


@dataclass(frozen=True)
class Refused:
    """The relay refused this recipient or message (``command`` RCPT or DATA)."""

    code: int
    message: str
    command: str

    @property
    def enhanced_code(self) -> str:
        """The RFC 3463 code in the reply (``5.1.1``), ``""`` when there is none."""
        found = _ENHANCED.search(self.message)
        return found.group(1) if found else ""


Outcome = Accepted | Refused


class TransportError(Exception):
    """The relay cannot take mail now (down, login refused, sender refused)."""


class Transport(Protocol):
    """Where rendered emails go."""

    async def send(self, envelope: Envelope, message: bytes) -> Outcome:
        """Hand one message over; :class:`TransportError` when nothing was taken."""
        ...

    async def close(self) -> None:
        """Close open connections."""
        ...


class FolderTransport:
    """The embedded default: each email becomes a ``.eml`` file a person can open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    async def send(self, envelope: Envelope, message: bytes) -> Outcome:
        """Write the message, with the ``Return-Path`` a receiving server would add."""
        name = _FILE_SAFE.sub("_", envelope.sender.partition("@")[0])[-60:]
        path = self.folder / f"{name}.eml"
        temporary = path.with_suffix(".tmp")
        head = f"Return-Path: <{envelope.sender}>\r\n".encode("ascii")
        temporary.write_bytes(head + message)
        os.replace(temporary, path)
        return Accepted(str(path))

    async def close(self) -> None:
        """Nothing to close."""


class SmtpTransport:
    """A pool of reused SMTP connections to one relay, bounded in number."""

    def __init__(self, settings: MailSettings) -> None:
        self._settings = settings
        self._idle: list[tuple[aiosmtplib.SMTP, int]] = []
        self._slots = asyncio.Semaphore(settings.smtp_connections)

    async def send(self, envelope: Envelope, message: bytes) -> Outcome:
        """Send one message on a pooled connection; retries once on a fresh one
        when a reused connection turned out to be closed by the relay."""
        async with self._slots:
            for attempt in (1, 2):
                client, used = await self._take()
                try:
                    outcome = await self._transaction(client, envelope, message)
                except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                    await _quietly_close(client)
                    if attempt == 2 or used == 0:
                        raise TransportError(f"the mail relay hung up: {exc}") from exc
                    continue
                except aiosmtplib.SMTPException as exc:
                    await _quietly_close(client)
                    raise TransportError(f"the mail relay failed: {exc}") from exc
                self._give_back(client, used + 1)
                return outcome
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Say goodbye to the relay on every idle connection."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, ConnectionError, OSError):
                client.close()

    async def _take(self) -> tuple[aiosmtplib.SMTP, int]:
        while self._idle:
            client, used = self._idle.pop()
            if client.is_connected:
                return client, used
        return await self._connect(), 0

    def _give_back(self, client: aiosmtplib.SMTP, used: int) -> None:
        if used >= self._settings.smtp_messages_per_connection:
            asyncio.get_running_loop().create_task(_polite_quit(client))
            return
        self._idle.append((client, used))

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            timeout=s.smtp_timeout_s,
            tls_context=ssl.create_default_context(),
        )
        try:
            await client.connect()
            if s.smtp_username:
                await client.login(s.smtp_username, s.smtp_password)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            log.warning(
                "mail relay unreachable",
                extra={
                    "event": "mailing.smtp_unreachable",
                    "host": s.smtp_host,
                    "port": s.smtp_port,
                    "error": str(exc)[:200],
                },
            )
            raise TransportError(
                f"cannot reach the mail relay {s.smtp_host}:{s.smtp_port}: {exc}; "
                "check PEGABRIDGE_SMTP_HOST, _PORT, _SECURITY and the login"
            ) from exc
        return client

    async def _transaction(
        self, client: aiosmtplib.SMTP, envelope: Envelope, message: bytes
    ) -> Outcome:
        try:
            await client.mail(envelope.sender)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            raise TransportError(
                f"the mail relay refused the sender: {exc.code} {exc.message}"
            ) from exc

        try:
            await client.rcpt(envelope.recipient)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return Refused(exc.code, exc.message, "RCPT")

        try:
            response = await client.data(message)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return Refused(exc.code, exc.message, "DATA")
        return Accepted(response.message)


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, ConnectionError):
        client.close()


async def _quietly_close(client: aiosmtplib.SMTP) -> None:
    client.close()


async def _polite_quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, ConnectionError, OSError):
        client.close()


def transport_for(settings: MailSettings, var_dir: Path) -> Transport:
    """The relay of the settings, or the ``.eml`` folder when no relay is set."""
    if settings.smtp_host:
        return SmtpTransport(settings)
    return FolderTransport(var_dir / "outbox-mail")
