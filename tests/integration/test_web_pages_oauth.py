"""Step 1 of the wizard with an OAuth 2.0 client, over real HTTP on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_web_pages import csrf_of, installation, post_form, signed_in_admin

from pegabridge.installs.service import AuthKind, ClientAuth
from pegabridge.sandbox import SandboxEndpoint, TokenIssuer

STEP1 = "/brands/1/10/install/1"


def oauth_form(sandbox: SandboxEndpoint, issuer: TokenIssuer) -> dict[str, str]:
    return {
        "endpoint_url": sandbox.url,
        "auth_kind": "oauth2",
        "token_url": issuer.url,
        "client_id": issuer.client_id,
        "client_secret": issuer.client_secret,
        "scope": "ih.write",
        "client_auth": "post",
    }


async def test_step_one_saves_an_oauth_client_and_never_shows_its_secret(
    served: Any, sandbox: SandboxEndpoint, issuer: TokenIssuer
) -> None:
    client = await signed_in_admin(served)

    response = await post_form(
        client, STEP1, {**oauth_form(sandbox, issuer), "action": "next"}
    )
    page = (await client.get(STEP1)).text
    saved = await installation(served, 1, 10)
    await client.aclose()

    assert response.headers["location"].endswith("/install/2")
    assert issuer.client_secret not in page and 'class="set-badge">set<' in page
    assert (saved.auth_kind, saved.client_auth, saved.scope) == (
        AuthKind.OAUTH2,
        ClientAuth.POST,
        "ih.write",
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"token_url": ""}, "token_url", "Enter the URL of the token endpoint"),
        (
            {"token_url": "http://login.example.com/token"},
            "token_url",
            "The token endpoint must use https://",
        ),
        (
            {"token_url": "https://169.254.169.254/token"},
            "token_url",
            "a cloud metadata address",
        ),
        ({"client_id": " "}, "client_id", "Enter the client id"),
        ({"client_secret": ""}, "client_secret", "Enter the client secret"),
        ({"scope": "ih\\write"}, "scope", "A scope is words separated by spaces"),
    ],
)
async def test_a_bad_oauth_value_is_refused_beside_its_field_and_nothing_saved(
    served: Any,
    sandbox: SandboxEndpoint,
    issuer: TokenIssuer,
    change: dict[str, str],
    field: str,
    message: str,
) -> None:
    client = await signed_in_admin(served)

    response = await post_form(
        client, STEP1, {**oauth_form(sandbox, issuer), **change, "action": "next"}
    )
    await client.aclose()

    assert response.status_code == 400
    assert f'id="f-e-{field}"' in response.text or f'id="e-{field}"' in response.text
    assert message in response.text
    assert await installation(served, 1, 10) is None


async def test_the_test_button_says_in_plain_words_that_the_client_was_refused(
    served: Any, sandbox: SandboxEndpoint, issuer: TokenIssuer
) -> None:
    client = await signed_in_admin(served)
    token = csrf_of((await client.get(STEP1)).text)
    form = {**oauth_form(sandbox, issuer), "action": "test", "csrf_token": token}

    refused = await press_test_button(client, {**form, "client_secret": "wrong"})
    accepted = await press_test_button(client, form)
    await client.aclose()

    assert refused["outcome"] == "token_refused"
    assert "refused the client id and secret" in refused["message"]
    assert accepted["outcome"] == "accepted" and accepted["ok"] is True
    assert sandbox.received[-1].authorization.startswith("Bearer ")


async def press_test_button(
    client: httpx.AsyncClient, form: dict[str, str]
) -> dict[str, Any]:
    """Press "Test connection" as the page's script does; the JSON answer."""
    response = await client.post(
        STEP1, data=form, headers={"X-Requested-With": "fetch"}
    )
    document: dict[str, Any] = response.json()
    return document
