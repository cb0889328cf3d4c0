"""The mailing side of one process, assembled from the runtime's parts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from pegabridge.config import Settings
from pegabridge.delivery.recorder import Recorder
from pegabridge.installs.vault import Vault
from pegabridge.mailing.links import LinkRegistry
from pegabridge.mailing.render import Renderer, return_domain
from pegabridge.mailing.sends import Sender
from pegabridge.mailing.settings import MailSettings
from pegabridge.mailing.transport import Transport, transport_for
from pegabridge.store.writer import GroupCommitter
from pegabridge.tracking.urls import TrackingUrls, key_ring_for


@dataclass
class Mailing:
    """Renderer, transport and sender sharing one link registry and key ring."""

    settings: MailSettings
    urls: TrackingUrls
    renderer: Renderer
    transport: Transport
    sender: Sender

    @classmethod
    def assemble(
        cls,
        settings: Settings,
        db: AsyncEngine,
        committer: GroupCommitter,
        vault: Vault,
        recorder: Recorder,
        mail_settings: MailSettings | None = None,
        transport: Transport | None = None,
    ) -> Mailing:
        """Build the mailing side; tokens are signed as tracking verifies them."""
        mail = mail_settings or MailSettings()
        ring = key_ring_for(
            getattr(settings, "tracking_keys", ""), vault.derive(b"tracking")
        )
        urls = TrackingUrls(settings.public_base_url.rstrip("/"), ring)
        renderer = Renderer(mail, urls, LinkRegistry(db, committer))
        transport = transport or transport_for(mail, settings.var_dir)
        sender = Sender(
            db,
            committer,
            recorder,
            renderer,
            transport,
            page_size=mail.send_page_size,
            concurrency=mail.smtp_connections * 2,
            message_id_domain=mail.message_id_domain or return_domain(mail),
        )
        return cls(mail, urls, renderer, transport, sender)

    async def close(self) -> None:
        """Close the transport's connections."""
        await self.transport.close()
