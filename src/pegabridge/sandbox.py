"""A trial endpoint standing in for Pega: it checks Basic auth and keeps what it gets.

``pegabridge sandbox-endpoint`` runs it for people without a Pega system at hand; the
tests and the benchmark use the same class as their receiver on loopback. With a
:class:`TokenIssuer`, the stand-in for an OAuth 2.0 client registration's token
endpoint, it accepts the bearer tokens that issuer handed out as well.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO
from urllib.parse import unquote_plus

from aiohttp import web

# The answer to one request: (status, body), or (status, body, extra headers).
Answer = tuple[int, str] | tuple[int, str, Mapping[str, str]]
# Decides the answer to one request; None means "accept".
Responder = Callable[["Received"], Answer | None]


@dataclass(frozen=True)
class Received:
    """One request as the endpoint saw it."""

    at: float
    body: bytes
    authorization: str
    content_type: str
    authorized: bool
    # The status code it was answered with (0 while the answer is being decided).
    status: int = 0

    def json(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.body)
        return document


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint, without the secret."""

    at: float
    client_id: str
    # How the client authenticated: "basic", "post", or "" when it did not.
    client_auth: str
    grant_type: str
    scope: str
    status: int


@dataclass
class TokenIssuer:
    """A token endpoint for the client credentials grant, on this machine.

    It knows one client, authenticated by HTTP Basic or by form fields, and hands out
    random bearer tokens that live ``lifetime_s`` seconds. ``responder`` may answer in
    its place (a script of outages or refusals); ``revoke_all`` makes every token
    handed out so far unusable, as an administrator revoking them would.
    """

    client_id: str
    client_secret: str
    lifetime_s: float = 3600.0
    host: str = "127.0.0.1"
    port: int = 0
    responder: Callable[[TokenRequest], Answer | None] | None = None
    requests: list[TokenRequest] = field(default_factory=list)
    _issued: dict[str, float] = field(default_factory=dict, repr=False)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/prweb/PRRestService/oauth2/v1/token"

    def issued(self) -> list[TokenRequest]:
        """The requests that were answered with a token."""
        return [r for r in self.requests if r.status == 200]

    def valid(self, token: str) -> bool:
        """Whether ``token`` was handed out here, unexpired and not revoked."""
        expires_at = self._issued.get(token)
        return expires_at is not None and time.time() < expires_at

    def revoke_all(self) -> None:
        """Make every token handed out so far unusable."""
        self._issued.clear()

    async def start(self) -> None:
        """Listen; with ``port`` 0 a free port is chosen and written back."""
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, secret, how = self._client_of(request, form)
        asked = TokenRequest(
            at=time.time(),
            client_id=client_id,
            client_auth=how,
            grant_type=str(form.get("grant_type", "")),
            scope=str(form.get("scope", "")),
            status=0,
        )
        status, text, *headers = self._answer(asked, secret)
        self.requests.append(replace(asked, status=status))
        return web.Response(
            status=status,
            text=text,
            content_type="application/json",
            headers=dict(headers[0]) if headers else None,
        )

    def _client_of(
        self, request: web.Request, form: Mapping[str, object]
    ) -> tuple[str, str, str]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            decoded = _basic_pair(token)
            if decoded is not None:
                # RFC 6749 section 2.3.1: both parts are form-encoded first.
                return unquote_plus(decoded[0]), unquote_plus(decoded[1]), "basic"
        if "client_id" in form:
            return str(form["client_id"]), str(form.get("client_secret", "")), "post"
        return "", "", ""

    def _answer(self, asked: TokenRequest, secret: str) -> Answer:
        if self.responder is not None:
            answer = self.responder(asked)
            if answer is not None:
                return answer
        if asked.client_id != self.client_id or secret != self.client_secret:
            # RFC 6749 section 5.2: 401 when the client tried the Authorization header.
            status = 401 if asked.client_auth == "basic" else 400
            return status, '{"error":"invalid_client"}'
        if asked.grant_type != "client_credentials":
            return 400, '{"error":"unsupported_grant_type"}'
        token = secrets.token_urlsafe(24)
        self._issued[token] = time.time() + self.lifetime_s
        document = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.lifetime_s,
        }
        return 200, json.dumps(document)


def _basic_pair(token: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


@dataclass
class SandboxEndpoint:
    """An HTTP receiver of events on this machine."""

    username: str
    password: str
    host: str = "127.0.0.1"
    port: int = 0
    store: Path | None = None
    echo: Callable[[str], None] | None = None
    responder: Responder | None = None
    # With an issuer, its bearer tokens are accepted besides the username and password.
    issuer: TokenIssuer | None = None
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _store_handle: IO[str] | None = None
    _arrived: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/events"

    def accepted(self) -> list[Received]:
        """The requests that were answered 2xx."""
        return [r for r in self.received if 200 <= r.status < 300]

    async def start(self) -> None:
        """Listen; with ``port`` 0 a free port is chosen and written back."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        app.router.add_get("/{tail:.*}", self._handle_get)
        self._arrived = asyncio.Condition()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        if self.store is not None:
            self._store_handle = self.store.open("a", encoding="utf-8")

    async def stop(self) -> None:
        """Stop listening and close the store file."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._store_handle is not None:
            self._store_handle.close()
            self._store_handle = None

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests were accepted; the accepted ones."""
        assert self._arrived is not None
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.accepted()) >= count), timeout_s
            )
        return self.accepted()

    def _check_auth(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.issuer is not None and self.issuer.valid(token)
        if scheme.lower() != "basic":
            return False
        return _basic_pair(token) == (self.username, self.password)

    def _answer(self, request: Received) -> Answer:
        if not request.authorized:
            return 401, '{"error":"wrong username or password"}'
        if self.responder is not None:
            answer = self.responder(request)
            if answer is not None:
                return answer
        try:
            json.loads(request.body)
        except ValueError:
            return 400, '{"error":"body is not JSON"}'
        return 200, '{"status":"received"}'

    async def _handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        received = Received(
            at=time.time(),
            body=await request.read(),
            authorization=header,
            content_type=request.headers.get("Content-Type", ""),
            authorized=self._check_auth(header),
        )
        # Decided once and kept: a scripted responder may answer differently each time.
        status, text, *headers = self._answer(received)
        received = replace(received, status=status)
        self.received.append(received)
        self._report(received, status)
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        return web.Response(
            status=status,
            text=text,
            content_type="application/json",
            headers=dict(headers[0]) if headers else None,
        )

    async def _handle_get(self, _request: web.Request) -> web.Response:
        return web.Response(
            text="pegabridge sandbox endpoint: POST events here\n", status=200
        )

    def _report(self, received: Received, status: int) -> None:
        if self._store_handle is not None and status < 300:
            self._store_handle.write(received.body.decode("utf-8", "replace") + "\n")
            self._store_handle.flush()
        if self.echo is None:
            return
        try:
            event = received.json()
            what = f"{event.get('metric')} {event.get('uuid')}"
        except ValueError:
            what = f"{len(received.body)} bytes, not JSON"
        self.echo(f"{status} {what}")
