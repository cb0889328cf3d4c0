"""Taking returned mail in: one message at a time, and the SMTP receiver of `serve`.

:class:`FeedbackIntake` is the one path of a returned message, whatever brought it
(the SMTP receiver, ``pegabridge feedback import``): parse it, match it to its
broadcast, record it. :class:`FeedbackReceiver` is an aiosmtpd server on the process's
own event loop that hands every message for the return-path domain to the intake and
answers ``250`` only after the message is committed; any failure answers ``451`` so
the sending server tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP
from sqlalchemy.ext.asyncio import AsyncEngine

from pegabridge.config import Settings
from pegabridge.delivery.recorder import Recorder
from pegabridge.feedback.matching import default_key_ring, match_report
from pegabridge.feedback.parse import parse_message
from pegabridge.feedback.recording import (
    Recorded,
    message_sha256,
    record_feedback,
    resume_recording,
)
from pegabridge.installs.vault import Vault
from pegabridge.store.writer import GroupCommitter
from pegabridge.tracking.tokens import KeyRing

logger = logging.getLogger(__name__)

MAX_RECIPIENTS = 100
"""Envelope recipients accepted per message; returned mail has one."""


class IntakeRuntime(Protocol):
    """What the intake needs of a process: a :class:`Runtime` has all of it."""

    settings: Settings
    db: AsyncEngine
    vault: Vault
    committer: GroupCommitter
    recorder: Recorder


class FeedbackIntake:
    """Parses, matches and records returned messages."""

    def __init__(self, runtime: IntakeRuntime, keys: KeyRing | None = None) -> None:
        self._runtime = runtime
        self._keys = keys or default_key_ring(runtime.settings, runtime.vault)

    async def accept(
        self,
        raw: bytes,
        envelope_recipients: Sequence[str] = (),
        source: str = "smtp",
        received_at: float | None = None,
    ) -> Recorded:
        """Record one message; returns once it (and its event) is committed."""
        report = await asyncio.to_thread(parse_message, raw)

        async with self._runtime.db.connect() as conn:
            match = await match_report(conn, report, self._keys, envelope_recipients)

        return await record_feedback(
            self._runtime,
            report,
            match,
            sha256=message_sha256(raw),
            source=source,
            received_at=received_at,
        )

    async def resume(self) -> int:
        """Finish messages a crash left half-recorded; how many."""
        return await resume_recording(self._runtime)


@dataclass
class _Handler:
    """The aiosmtpd hooks: which recipients to take, and what to do with the data."""

    intake: FeedbackIntake
    domain: str
    counts: dict[str, int] = field(default_factory=dict)

    async def handle_RCPT(
        self,
        _server: SMTP,
        _session: Any,
        envelope: Any,
        address: str,
        _rcpt_options: list[str],
    ) -> str:
        if not self._takes(address):
            return "550 5.1.1 No such recipient here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, _server: SMTP, _session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            recorded = await self.intake.accept(bytes(raw), list(envelope.rcpt_tos))
        except Exception:
            logger.exception(
                "returned message could not be recorded",
                extra={"event": "feedback.smtp_failed", "size": len(raw)},
            )
            return "451 4.3.0 Could not record the message, try again later"

        key = recorded.outcome.value
        self.counts[key] = self.counts.get(key, 0) + 1
        return "250 2.0.0 Recorded"

    def _takes(self, address: str) -> bool:
        if not self.domain:
            return True
        _local, at, domain = address.rpartition("@")
        return bool(at) and domain.lower().rstrip(".") == self.domain


class FeedbackReceiver:
    """The SMTP server for returned mail, on the running event loop."""

    def __init__(
        self, intake: FeedbackIntake, settings: Settings, hostname: str = ""
    ) -> None:
        self.handler = _Handler(intake, settings.return_path_domain.lower().strip("."))
        self.host = settings.feedback_smtp_host
        self.port = settings.feedback_smtp_port or 0
        self._max_bytes = settings.feedback_max_message_bytes
        self._hostname = hostname or settings.return_path_domain or None
        self._server: asyncio.Server | None = None
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def counts(self) -> dict[str, int]:
        """Messages taken since start, per outcome."""
        return dict(self.handler.counts)

    async def start(self) -> None:
        """Finish half-recorded messages, then listen (``port`` 0: a free one)."""
        await self.handler.intake.resume()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(
            "feedback receiver listening",
            extra={
                "event": "feedback.receiver_started",
                "host": self.host,
                "port": self.port,
                "domain": self.handler.domain,
            },
        )

    async def stop(self) -> None:
        """Stop taking connections and close the open ones."""
        if self._server is None:
            return
        self._server.close()
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        await self._server.wait_closed()
        self._server = None
        self._protocols.clear()

    def _protocol(self) -> SMTP:
        protocol = SMTP(
            self.handler,
            data_size_limit=self._max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self._hostname,
            ident="pegabridge feedback",
        )
        self._protocols.add(protocol)
        return protocol


async def start_receiver(runtime: IntakeRuntime) -> FeedbackReceiver | None:
    """Start the receiver when ``feedback_smtp_port`` is set; None otherwise."""
    if runtime.settings.feedback_smtp_port is None:
        return None
    receiver = FeedbackReceiver(FeedbackIntake(runtime), runtime.settings)
    await receiver.start()
    return receiver


async def stop_receiver(receiver: FeedbackReceiver | None) -> None:
    """Stop a receiver started by :func:`start_receiver` (None: nothing to do)."""
    if receiver is not None:
        await receiver.stop()
