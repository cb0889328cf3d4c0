"""The parts a running pegabridge process shares: database, writer, vault, delivery."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from pegabridge.config import Settings
from pegabridge.delivery.engine import DeliveryEngine
from pegabridge.delivery.recorder import Recorder
from pegabridge.installs.vault import Vault, vault_for
from pegabridge.store.db import create_engine
from pegabridge.store.migrate import upgrade
from pegabridge.store.writer import GroupCommitter

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What request handlers and background tasks need, made once per process."""

    settings: Settings
    db: AsyncEngine
    committer: GroupCommitter
    vault: Vault
    delivery: DeliveryEngine | None
    recorder: Recorder

    @classmethod
    async def open(
        cls, settings: Settings, deliver: bool = True, migrate: bool = True
    ) -> Runtime:
        """Open the database (migrated), start the writer and, if asked, delivery."""
        db = create_engine(settings)
        if migrate:
            await upgrade(db)
        committer = GroupCommitter(db)
        await committer.start()
        vault = vault_for(settings)
        delivery = DeliveryEngine(db, committer, vault, settings) if deliver else None
        if delivery is not None:
            await delivery.start()
        return cls(
            settings, db, committer, vault, delivery, Recorder(committer, delivery)
        )

    async def close(self) -> None:
        """Stop delivery, commit what is queued, and close the database."""
        if self.delivery is not None:
            await self.delivery.stop()
        await self.committer.stop()
        await self.db.dispose()
