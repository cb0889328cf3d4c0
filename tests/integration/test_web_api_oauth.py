"""An OAuth 2.0 client through the installation API and the connection test."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from test_web_api import api_client

from pegabridge.installs.connection_test import Outcome, check_connection
from pegabridge.installs.endpoint_guard import EndpointGuard
from pegabridge.installs.service import ClientAuth, OAuthClient
from pegabridge.sandbox import SandboxEndpoint, TokenIssuer

GUARD = EndpointGuard()


def client_of(issuer: TokenIssuer, **changes: Any) -> OAuthClient:
    values = {
        "token_url": issuer.url,
        "client_id": issuer.client_id,
        "client_secret": issuer.client_secret,
        **changes,
    }
    return OAuthClient(**values)


def oauth_install(sandbox: SandboxEndpoint, issuer: TokenIssuer) -> dict[str, Any]:
    return {
        "endpoint_url": sandbox.url,
        "auth": "oauth2",
        "token_url": issuer.url,
        "client_id": issuer.client_id,
        "client_secret": issuer.client_secret,
        "scope": "ih.write",
        "client_auth": "post",
        "activities": ["broadcasts"],
        "activate": True,
    }


@pytest.mark.parametrize("client_auth", list(ClientAuth))
async def test_the_connection_test_sends_with_a_token_from_the_token_endpoint(
    sandbox: SandboxEndpoint, issuer: TokenIssuer, client_auth: ClientAuth
) -> None:
    oauth = client_of(issuer, client_auth=client_auth, scope="ih.write")

    report = await check_connection(sandbox.url, "", "", GUARD, oauth=oauth)

    assert report.outcome is Outcome.ACCEPTED, report.message
    assert [(r.client_auth, r.scope) for r in issuer.requests] == [
        (client_auth.value, "ih.write")
    ]
    assert sandbox.received[0].authorization.startswith("Bearer ")


async def test_the_connection_test_says_the_token_endpoint_refused_the_client(
    sandbox: SandboxEndpoint, issuer: TokenIssuer
) -> None:
    oauth = client_of(issuer, client_secret="wrong")

    report = await check_connection(sandbox.url, "", "", GUARD, oauth=oauth)

    assert report.outcome is Outcome.TOKEN_REFUSED and report.status_code == 401
    assert "refused the client id and secret" in report.message
    assert sandbox.received == []


async def test_the_connection_test_says_there_is_no_token_endpoint_at_the_url(
    sandbox: SandboxEndpoint, issuer: TokenIssuer
) -> None:
    issuer.responder = lambda _request: (404, "not here")

    report = await check_connection(sandbox.url, "", "", GUARD, oauth=client_of(issuer))

    assert report.outcome is Outcome.TOKEN_NOT_FOUND


async def test_the_connection_test_says_the_token_endpoint_cannot_be_reached(
    sandbox: SandboxEndpoint,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    oauth = OAuthClient(f"http://127.0.0.1:{port}/token", "id", "secret")

    report = await check_connection(sandbox.url, "", "", GUARD, oauth=oauth)

    assert report.outcome is Outcome.TOKEN_CONNECTION_REFUSED
    assert report.message.startswith("The token endpoint could not be reached")


async def test_the_connection_test_refuses_a_token_url_at_a_private_address(
    sandbox: SandboxEndpoint,
) -> None:
    oauth = OAuthClient("https://10.9.9.9/token", "id", "secret")

    report = await check_connection(sandbox.url, "", "", GUARD, oauth=oauth)

    assert report.outcome is Outcome.TOKEN_BLOCKED


async def test_an_oauth_installation_through_the_api_never_shows_its_secret(
    served: Any, sandbox: SandboxEndpoint, issuer: TokenIssuer
) -> None:
    client = await api_client(served)

    saved = await client.put(
        "/api/v1/brands/10/pega", json=oauth_install(sandbox, issuer)
    )
    tested = await client.post("/api/v1/brands/10/pega/test-connection", json={})
    await client.aclose()

    assert saved.status_code == 200, saved.text
    assert saved.json()["auth"] == "oauth2" and saved.json()["client_secret_set"]
    assert issuer.client_secret not in saved.text
    assert tested.json()["outcome"] == "accepted"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"token_url": "http://token.example.com/oauth"}, "token_url"),
        ({"token_url": "https://10.1.2.3/token"}, "token_url"),
        ({"client_secret": None}, "client_secret"),
        ({"scope": 'ih "write"'}, "scope"),
    ],
)
async def test_a_bad_oauth_value_is_refused_with_its_field_and_nothing_saved(
    served: Any,
    sandbox: SandboxEndpoint,
    issuer: TokenIssuer,
    change: dict[str, Any],
    field: str,
) -> None:
    client = await api_client(served)

    response = await client.put(
        "/api/v1/brands/10/pega", json={**oauth_install(sandbox, issuer), **change}
    )
    listed = await client.get("/api/v1/brands")
    await client.aclose()

    assert response.status_code == 422
    assert response.json()["field"] == field
    assert listed.json()[0]["installation"] is None
