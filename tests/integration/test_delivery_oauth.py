"""Delivery with an OAuth 2.0 client: a token endpoint and the sandbox on loopback.

The token endpoint is the sandbox's :class:`TokenIssuer` on a port of its own; the
sandbox accepts the bearer tokens it hands out.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from test_delivery import (
    Script,
    count_in_state,
    eventually,
    ingest,
    installation,
    uuids_of,
)

from pegabridge.events.metrics import Activity
from pegabridge.installs.service import AuthKind, ClientAuth, InstallSettings
from pegabridge.sandbox import SandboxEndpoint, TokenIssuer


def oauth_settings(
    sandbox: SandboxEndpoint,
    issuer: TokenIssuer,
    secret: str = "",
    client_auth: ClientAuth = ClientAuth.BASIC,
) -> InstallSettings:
    return InstallSettings(
        endpoint_url=sandbox.url,
        auth_kind=AuthKind.OAUTH2,
        token_url=issuer.url,
        client_id=issuer.client_id,
        client_secret=secret or issuer.client_secret,
        client_auth=client_auth,
        activities=frozenset(Activity),
    )


def bearer_tokens(sandbox: SandboxEndpoint) -> list[str]:
    return [r.authorization for r in sandbox.received]


@pytest.mark.parametrize("client_auth", list(ClientAuth))
async def test_one_token_serves_many_events(
    pega_app: Any, issuer: TokenIssuer, client_auth: ClientAuth
) -> None:
    await pega_app.install_with(
        oauth_settings(pega_app.sandbox, issuer, client_auth=client_auth)
    )

    uuids = await ingest(pega_app, 30)
    delivered = await pega_app.sandbox.wait_for(30)

    assert sorted(uuids_of(delivered)) == sorted(uuids)
    assert [r.client_auth for r in issuer.requests] == [client_auth.value]
    assert len(set(bearer_tokens(pega_app.sandbox))) == 1


async def test_a_token_near_its_expiry_is_replaced_before_the_next_event(
    pega_app: Any, issuer: TokenIssuer
) -> None:
    issuer.lifetime_s = 1.0
    await pega_app.install_with(oauth_settings(pega_app.sandbox, issuer))

    await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(1)
    await asyncio.sleep(1.0)
    await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(2)

    assert len(issuer.issued()) == 2
    assert [r.status for r in pega_app.sandbox.received] == [200, 200]
    assert len(set(bearer_tokens(pega_app.sandbox))) == 2


async def test_a_revoked_token_is_replaced_once_and_the_event_delivered(
    pega_app: Any, issuer: TokenIssuer
) -> None:
    installation_id = await pega_app.install_with(
        oauth_settings(pega_app.sandbox, issuer)
    )
    await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(1)

    issuer.revoke_all()
    [uuid] = await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(2)

    assert [r.status for r in pega_app.sandbox.received] == [200, 401, 200]
    assert uuids_of(pega_app.sandbox.received[1:]) == [uuid, uuid]
    assert (await installation(pega_app, installation_id)).state.value == "active"


async def test_a_token_the_endpoint_keeps_refusing_pauses_after_one_new_token(
    pega_app: Any, issuer: TokenIssuer
) -> None:
    pega_app.sandbox.responder = Script(float("inf"), (401, "no access"))
    installation_id = await pega_app.install_with(
        oauth_settings(pega_app.sandbox, issuer)
    )

    await ingest(pega_app, 1)

    async def paused() -> bool:
        return (await installation(pega_app, installation_id)).state.value == "paused"

    await eventually(paused)
    reason = (await installation(pega_app, installation_id)).pause_reason
    assert "access token" in reason and "401" in reason
    assert len(issuer.issued()) == 2


async def test_a_refused_client_pauses_with_the_reason_until_its_secret_is_saved(
    pega_app: Any, issuer: TokenIssuer
) -> None:
    installation_id = await pega_app.install_with(
        oauth_settings(pega_app.sandbox, issuer, secret="not-the-secret")
    )
    uuids = await ingest(pega_app, 3)

    async def paused() -> bool:
        return (await installation(pega_app, installation_id)).state.value == "paused"

    await eventually(paused)
    reason = (await installation(pega_app, installation_id)).pause_reason
    assert "refused the client id and secret" in reason and "invalid_client" in reason
    assert pega_app.sandbox.received == []
    assert len(issuer.requests) == 1
    assert await count_in_state(pega_app, "pending") == 3

    await pega_app.install_with(InstallSettings(client_secret=issuer.client_secret))
    delivered = await pega_app.sandbox.wait_for(3)
    assert sorted(uuids_of(delivered)) == sorted(uuids)


async def test_a_token_endpoint_that_is_down_is_retried_until_it_is_back(
    pega_app: Any, issuer: TokenIssuer
) -> None:
    await issuer.stop()
    installation_id = await pega_app.install_with(
        oauth_settings(pega_app.sandbox, issuer)
    )
    uuids = await ingest(pega_app, 2)

    async def retried() -> bool:
        pending = await count_in_state(pega_app, "pending")
        return pending == 2 and pega_app.runtime.delivery.failed_attempts >= 2

    await eventually(retried)
    await issuer.start()
    delivered = await pega_app.sandbox.wait_for(2, timeout_s=15)

    assert sorted(uuids_of(delivered)) == sorted(uuids)
    assert (await installation(pega_app, installation_id)).state.value == "active"


async def test_a_busy_token_endpoint_is_retried_not_a_pause(
    pega_app: Any, issuer: TokenIssuer
) -> None:
    issuer.responder = Script(3, (503, '{"error":"busy"}'))
    installation_id = await pega_app.install_with(
        oauth_settings(pega_app.sandbox, issuer)
    )

    [uuid] = await ingest(pega_app, 1)
    delivered = await pega_app.sandbox.wait_for(1)

    assert uuids_of(delivered) == [uuid]
    assert [r.status for r in issuer.requests] == [503, 503, 503, 200]
    assert (await installation(pega_app, installation_id)).state.value == "active"


async def test_neither_the_client_secret_nor_a_token_is_ever_logged(
    pega_app: Any, issuer: TokenIssuer, captured: io.StringIO
) -> None:
    issuer.lifetime_s = 0.5
    await pega_app.install_with(oauth_settings(pega_app.sandbox, issuer))
    await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(1)
    issuer.revoke_all()
    await asyncio.sleep(0.5)
    await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(2)

    text = captured.getvalue()
    tokens = [auth.split(" ", 1)[1] for auth in bearer_tokens(pega_app.sandbox)]

    assert "delivery.token_fetched" in text
    assert issuer.client_secret not in text
    assert not [token for token in tokens if token in text]
