"""A trial endpoint standing in for Pega: it checks Basic auth and keeps what it gets.

``pegabridge sandbox-endpoint`` runs it for people without a Pega system at hand; the
tests and the benchmark use the same class as their receiver on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

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
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.username}:{self.password}"

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
