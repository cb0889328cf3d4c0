"""Access tokens of an OAuth 2.0 client, by the client credentials grant.

This is how a Pega OAuth 2.0 client registration is used from outside (RFC 6749
section 4.4): a form POST of ``grant_type=client_credentials`` (and the scope, when one
is set) to the token endpoint, the client authenticated by HTTP Basic
(``client_secret_basic``) or by fields of the form (``client_secret_post``). The JSON
answer holds ``access_token``, ``token_type`` (``Bearer``) and ``expires_in``.

A token is kept until shortly before it expires and shared by all the workers of an
endpoint, so that one fetch serves many events. The extra headers of an installation
are for the Pega endpoint and are not sent here: the token endpoint may belong to
another party.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote_plus, urlsplit

import aiohttp

from pegabridge.installs.endpoint_guard import EndpointRefused
from pegabridge.installs.service import ClientAuth, OAuthClient

log = logging.getLogger(__name__)

# A token is renewed this long before it expires (at most a tenth of its lifetime), so
# that a request never goes out with a token that expires on the way.
REFRESH_MARGIN_S = 30.0
# How long a token is kept when the token endpoint does not say (``expires_in`` is
# only recommended by RFC 6749); a 401 renews it sooner.
DEFAULT_LIFETIME_S = 300.0
# After a failed fetch, the workers waiting for a token get the same failure for this
# long instead of asking again each: one question per second to an endpoint that is
# down. A refused client is refused until its settings change (a new token source).
FAILURE_HOLD_S = 1.0
ANSWER_CHARS = 200

# Token endpoint answers that a retry cannot fix: the client or its setup is wrong.
REFUSED = "token_refused"
NOT_FOUND = "token_endpoint_not_found"
BAD_ANSWER = "token_bad_answer"
# An answer that may pass (5xx, 429...). A token endpoint that cannot be reached gives
# "token_" and the kind of connection failure: ``token_timed_out`` and so on.
OTHER_ANSWER = "token_other_answer"


class TokenError(Exception):
    """No token: ``kind`` says which sort of failure, the message says it in plain
    words (never with the secret), ``status_code`` is the token endpoint's answer."""

    def __init__(self, kind: str, message: str, status_code: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code

    @property
    def pauses(self) -> bool:
        """Whether the failure needs a person: the installation is paused."""
        return self.kind in (REFUSED, NOT_FOUND, BAD_ANSWER)


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and the moment (``time.monotonic``) it is due for renewal."""

    value: str = field(repr=False)
    renew_at: float

    @property
    def authorization(self) -> str:
        return f"Bearer {self.value}"


def form_of(client: OAuthClient) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers of a client credentials request."""
    form = {"grant_type": "client_credentials"}
    if client.scope:
        form["scope"] = client.scope
    headers = {"Accept": "application/json"}
    if client.client_auth is ClientAuth.POST:
        form["client_id"] = client.client_id
        form["client_secret"] = client.client_secret
    else:
        headers["Authorization"] = client_basic_header(client)
    return form, headers


def client_basic_header(client: OAuthClient) -> str:
    """``client_secret_basic``: unlike plain Basic auth, RFC 6749 section 2.3.1 has
    the id and the secret form-encoded before they are joined and base64-encoded."""
    pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


async def fetch_token(
    session: aiohttp.ClientSession,
    client: OAuthClient,
    clock: Callable[[], float] = time.monotonic,
) -> AccessToken:
    """Ask the token endpoint for a token; :class:`TokenError` says why not."""
    form, headers = form_of(client)
    asked_at = clock()
    try:
        async with session.post(
            client.token_url, data=form, headers=headers
        ) as response:
            body = await response.content.read(16384)
            status = response.status
    except (TimeoutError, aiohttp.ClientError, EndpointRefused, OSError) as exc:
        raise _unreachable(exc, client) from exc
    return read_token_answer(status, body, client, asked_at)


def read_token_answer(
    status: int, body: bytes, client: OAuthClient, asked_at: float
) -> AccessToken:
    """The token in a token endpoint's answer, or :class:`TokenError`."""
    document = _json_object(body)
    if 200 <= status < 300:
        return _token_of(document, client, asked_at)
    if status in (400, 401, 403):
        raise TokenError(REFUSED, _refusal_sentence(status, document, client), status)
    if status in (404, 405):
        raise TokenError(
            NOT_FOUND,
            f"There is no token endpoint at the token URL (HTTP {status}); check the "
            "URL of the OAuth 2.0 client registration.",
            status,
        )
    raise TokenError(
        OTHER_ANSWER,
        f"The token endpoint answered HTTP {status}; it is tried again later.",
        status,
    )


def _token_of(
    document: dict[str, object], client: OAuthClient, asked_at: float
) -> AccessToken:
    value = document.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenError(
            BAD_ANSWER,
            "The token endpoint answered without an access token; check that the "
            "token URL is the one of the OAuth 2.0 client registration.",
        )
    kind = document.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise TokenError(
            BAD_ANSWER,
            f"The token endpoint issued a token of type {_clean(str(kind), client)!r}; "
            "only bearer tokens can be sent.",
        )
    return AccessToken(value, asked_at + _renew_after_s(document.get("expires_in")))


def _renew_after_s(expires_in: object) -> float:
    try:
        lifetime = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME_S
    if not math.isfinite(lifetime) or lifetime <= 0:
        lifetime = DEFAULT_LIFETIME_S
    return lifetime - min(REFRESH_MARGIN_S, lifetime / 10)


def _refusal_sentence(
    status: int, document: dict[str, object], client: OAuthClient
) -> str:
    code = _clean(str(document.get("error", "")), client)[:60]
    said = f"HTTP {status}" + (f", {code}" if code else "")
    if code == "invalid_scope":
        return (
            f"The token endpoint refused the scope ({said}); correct the scope or "
            "leave it empty."
        )
    if code in ("unauthorized_client", "unsupported_grant_type"):
        return (
            f"The token endpoint does not allow this client the client credentials "
            f"grant ({said}); enable it in the OAuth 2.0 client registration."
        )
    return (
        f"The token endpoint refused the client id and secret ({said}); check both "
        "against the OAuth 2.0 client registration."
    )


def _unreachable(exc: BaseException, client: OAuthClient) -> TokenError:
    # Imported here: the delivery client imports this module.
    from pegabridge.delivery.client import describe_failure

    host = urlsplit(client.token_url).hostname or client.token_url
    kind, sentence = describe_failure(exc, host)
    return TokenError(
        f"token_{kind}",
        f"The token endpoint could not be reached: {sentence[:1].lower()}"
        f"{sentence[1:]}",
    )


def _json_object(body: bytes) -> dict[str, object]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _clean(text: str, client: OAuthClient) -> str:
    """Text from the token endpoint, with the secret masked should it echo it."""
    if client.client_secret:
        text = text.replace(client.client_secret, "***")
    return " ".join(text.split())[:ANSWER_CHARS]


class TokenSource:
    """The current token of one OAuth 2.0 client, fetched once for all workers.

    A failure is kept too: a refusal for the life of the source, any other failure
    for :data:`FAILURE_HOLD_S`, so that many workers do not each ask in turn.
    """

    def __init__(
        self,
        client: OAuthClient,
        installation_id: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.installation_id = installation_id
        self.fetches = 0
        self._clock = clock
        self._token: AccessToken | None = None
        self._failure: TokenError | None = None
        self._failed_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self, session: aiohttp.ClientSession) -> AccessToken:
        """A token that is not due for renewal, fetched when needed."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh  # every POST asks: no lock while the token is good
        async with self._lock:
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            self._raise_held_failure()

            try:
                self._token = await self._fetch(session)
            except TokenError as exc:
                self._failure, self._failed_at = exc, self._clock()
                raise
            self._failure = None
            return self._token

    def _fresh(self) -> AccessToken | None:
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token
        return None

    def _raise_held_failure(self) -> None:
        failure = self._failure
        if failure is None:
            return
        if failure.pauses or self._clock() < self._failed_at + FAILURE_HOLD_S:
            # A new exception each time: raising one object again grows its traceback.
            raise TokenError(failure.kind, failure.message, failure.status_code)

    def forget(self, token: AccessToken) -> None:
        """Drop ``token`` (the endpoint refused it); a newer one is kept."""
        if self._token is token:
            self._token = None

    async def _fetch(self, session: aiohttp.ClientSession) -> AccessToken:
        self.fetches += 1
        try:
            token = await fetch_token(session, self.client, self._clock)
        except TokenError as exc:
            log.warning(
                "no access token from the token endpoint",
                extra={
                    "event": "delivery.token_failed",
                    "installation_id": self.installation_id,
                    "kind": exc.kind,
                    "status_code": exc.status_code,
                    "error": exc.message,
                },
            )
            raise
        log.info(
            "access token fetched",
            extra={
                "event": "delivery.token_fetched",
                "installation_id": self.installation_id,
                "renew_in_s": round(token.renew_at - self._clock(), 1),
            },
        )
        return token
