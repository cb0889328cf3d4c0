"""Setting up a portal and a brand with the Pega app installed, for tests."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.events.metrics import Activity
from pegabridge.installs import service
from pegabridge.installs.service import InstallSettings
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.web.runtime import Runtime


async def install_brand_for(
    runtime: Runtime,
    portal: tuple[int, str],
    brand: tuple[int, str],
    sandbox: SandboxEndpoint | None,
) -> None:
    """Create the portal and brand; with a sandbox, install the app for everything."""

    async def setup(conn: AsyncConnection) -> None:
        await service.create_portal(conn, *portal)
        await service.create_brand(conn, portal[0], *brand)
        if sandbox is None:
            return
        await service.save_installation(
            conn,
            runtime.vault,
            portal[0],
            brand[0],
            InstallSettings(
                endpoint_url=sandbox.url,
                username=sandbox.username,
                password=sandbox.password,
                activities=frozenset(Activity),
            ),
            activate=True,
        )

    await runtime.committer.run(setup)
    if runtime.delivery is not None:
        runtime.delivery.wake()
