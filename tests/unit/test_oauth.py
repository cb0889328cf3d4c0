"""Reading a token endpoint's answer, and the request of a client credentials grant."""

from __future__ import annotations

import base64

import pytest

from pegabridge.delivery import oauth
from pegabridge.delivery.client import EndpointClient, EndpointConfig
from pegabridge.delivery.oauth import TokenError, client_basic_header, form_of
from pegabridge.installs.endpoint_guard import EndpointGuard
from pegabridge.installs.service import ClientAuth, OAuthClient

CLIENT = OAuthClient("https://pega.example.com/token", "app id", "se:cr&t")


def refusal(status: int, body: bytes) -> TokenError:
    with pytest.raises(TokenError) as caught:
        oauth.read_token_answer(status, body, CLIENT, asked_at=100.0)
    return caught.value


def test_a_token_is_renewed_a_tenth_of_its_lifetime_before_it_expires() -> None:
    body = b'{"access_token":"abc","token_type":"Bearer","expires_in":60}'

    token = oauth.read_token_answer(200, body, CLIENT, asked_at=100.0)

    assert (token.authorization, token.renew_at) == ("Bearer abc", 154.0)


def test_a_long_lived_token_is_renewed_thirty_seconds_before_it_expires() -> None:
    body = b'{"access_token":"abc","token_type":"bearer","expires_in":3600}'

    token = oauth.read_token_answer(200, body, CLIENT, asked_at=0.0)

    assert token.renew_at == 3570.0


@pytest.mark.parametrize("lifetime", ["", ',"expires_in":null', ',"expires_in":"NaN"'])
def test_a_token_without_a_usable_lifetime_is_kept_for_the_default(
    lifetime: str,
) -> None:
    body = ('{"access_token":"abc"' + lifetime + "}").encode()

    token = oauth.read_token_answer(200, body, CLIENT, 0.0)

    assert token.renew_at == oauth.DEFAULT_LIFETIME_S - 30.0


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (401, b'{"error":"invalid_client"}', oauth.REFUSED, "client id and secret"),
        (400, b'{"error":"invalid_scope"}', oauth.REFUSED, "refused the scope"),
        (400, b'{"error":"unauthorized_client"}', oauth.REFUSED, "grant"),
        (404, b"<html>no</html>", oauth.NOT_FOUND, "no token endpoint"),
        (200, b'{"token_type":"bearer"}', oauth.BAD_ANSWER, "without an access"),
        (200, b'{"access_token":"a","token_type":"mac"}', oauth.BAD_ANSWER, "'mac'"),
        (503, b"busy", oauth.OTHER_ANSWER, "HTTP 503"),
    ],
)
def test_each_answer_without_a_token_is_named_in_plain_words(
    status: int, body: bytes, kind: str, words: str
) -> None:
    error = refusal(status, body)

    assert (error.kind, error.pauses) == (kind, kind != oauth.OTHER_ANSWER)
    assert words in error.message


def test_a_secret_echoed_by_the_token_endpoint_is_masked() -> None:
    error = refusal(400, b'{"error":"bad se:cr&t"}')

    assert "se:cr&t" not in error.message and "***" in error.message


def test_client_secret_basic_form_encodes_id_and_secret_before_base64() -> None:
    header = client_basic_header(CLIENT)

    assert base64.b64decode(header.split()[1]) == b"app+id:se%3Acr%26t"


def test_client_secret_post_sends_id_and_secret_in_the_form_only() -> None:
    post = OAuthClient(CLIENT.token_url, "id", "secret", "a b", ClientAuth.POST)

    form, headers = form_of(post)

    assert form == {
        "grant_type": "client_credentials",
        "scope": "a b",
        "client_id": "id",
        "client_secret": "secret",
    }
    assert "Authorization" not in headers


@pytest.mark.parametrize(
    ("token_url", "guard", "words"),
    [
        ("https://169.254.169.254/token", EndpointGuard(), "cloud metadata"),
        ("http://localhost:9/token", EndpointGuard(allow_loopback=False), "loopback"),
    ],
)
async def test_the_token_url_obeys_the_address_guard_when_fetching(
    token_url: str, guard: EndpointGuard, words: str
) -> None:
    client = EndpointClient(
        EndpointConfig(
            url="https://pega.example.com/events",
            username="",
            password="",
            guard=guard,
            oauth=OAuthClient(token_url, "id", "secret"),
        )
    )

    result = await client.post("{}")
    await client.close()

    assert result.status_code is None and words in result.error
